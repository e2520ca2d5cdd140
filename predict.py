"""Tags audio files with a trained SampleCNN, and exports embeddings.  (`samplecnn predict`; the code is in samplecnn/cli/predict.py)"""
from samplecnn.cli import run

if __name__ == "__main__":
    run("samplecnn.cli.predict")
