"""Installs the samplecnn package, its console scripts and the test extra."""
from setuptools import find_packages, setup

setup(
    name="samplecnn",
    version="0.1.0",
    description="Raw-waveform audio classification with SampleCNN models (TensorFlow 2 / Keras 3)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["samplecnn", "samplecnn.*"]),
    py_modules=["build_dataset", "train", "evaluate", "predict"],
    install_requires=[
        "tensorflow>=2.16",
        "tensorboard",
        "keras>=3",
        "librosa",
        "soundfile",
        "soxr",
        "google-crc32c",
        "pandas",
        "numpy",
        "scikit-learn",
        "h5py",
        "ffmpeg-python",
        "absl-py",
    ],
    extras_require={"test": ["pytest", "scipy"]},
    entry_points={
        "console_scripts": [
            "samplecnn-build=build_dataset:run_cli",
            "samplecnn-train=train:run_cli",
            "samplecnn-evaluate=evaluate:run_cli",
            "samplecnn-predict=predict:run_cli",
        ]
    },
)
