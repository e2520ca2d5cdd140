"""Builds sharded TFRecords from a raw data set download.  (`samplecnn build`; the code is in samplecnn/cli/build.py)"""
from samplecnn.cli import run

if __name__ == "__main__":
    run("samplecnn.cli.build")
