"""Installs the samplecnn package, its console scripts and the test extra."""
from setuptools import find_packages, setup

setup(
    name="samplecnn",
    version="0.2.0",
    description="Raw-waveform audio classification with SampleCNN models (TensorFlow 2 / Keras 3)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["samplecnn", "samplecnn.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "tensorboard",
        "keras>=3",
        "librosa",
        "matplotlib",
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
    extras_require={
        "test": ["pytest", "scipy", "selenium"],
        "export": ["tf2onnx", "onnxruntime", "ai-edge-litert"],
        "serve": ["fastapi", "uvicorn[standard]", "python-multipart", "fastapi-offline"],
        "bench": ["torch"],
    },
    package_data={"samplecnn.serve": ["static/*"]},
    entry_points={
        "console_scripts": [
            "samplecnn=samplecnn.cli:main",
            "samplecnn-build=samplecnn.cli.build:run_cli",
            "samplecnn-train=samplecnn.cli.train:run_cli",
            "samplecnn-evaluate=samplecnn.cli.evaluate:run_cli",
            "samplecnn-predict=samplecnn.cli.predict:run_cli",
        ]
    },
)
