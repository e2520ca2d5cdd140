"""Trains a SampleCNN on a built data set.  (`samplecnn train`; the code is in samplecnn/cli/train.py)"""
from samplecnn.cli import run

if __name__ == "__main__":
    run("samplecnn.cli.train")
