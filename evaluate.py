"""Evaluates a trained SampleCNN on a data set's test split at clip level.  (`samplecnn evaluate`; the code is in samplecnn/cli/evaluate.py)"""
from samplecnn.cli import run

if __name__ == "__main__":
    run("samplecnn.cli.evaluate")
