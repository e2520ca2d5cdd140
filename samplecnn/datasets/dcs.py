"""DCASE 2017 Task 4 weakly labelled sound events: 17 classes."""
from samplecnn.datasets.base import MULTILABEL, DatasetSpec, register_spec

CLASSES = (
    "Train horn",
    "Air horn, truck horn",
    "Car alarm",
    "Reversing beeps",
    "Ambulance (siren)",
    "Police car (siren)",
    "Fire engine, fire truck (siren)",
    "Civil defense siren",
    "Screaming",
    "Bicycle",
    "Skateboard",
    "Car",
    "Car passing by",
    "Bus",
    "Truck",
    "Motorcycle",
    "Train",
)

SPEC = register_spec(DatasetSpec(
    name="dcs",
    sample_rate=22050,
    clip_seconds=10.0,
    segment_samples=22050,
    segments_per_clip=10,
    num_blocks=8,
    classes=CLASSES,
    task=MULTILABEL,
    threshold=0.1,
    clips_per_shard=300,
))
