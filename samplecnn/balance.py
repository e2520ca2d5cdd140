"""Class weights: a loss that counts rare classes as much as common ones.

``balanced`` weighs each class by inverse frequency in the train split: a single-label
segment of class c counts segments / (classes * segments of c), as scikit-learn's
``class_weight="balanced"``; in a multi-label set each class's positive term counts
negatives / positives of that class, its negative term 1. Counts are of train segments
(what the loss sees), counted once when the run is created and kept in config.json.
"""
import keras
import numpy as np
import tensorflow as tf

from samplecnn import pipeline
from samplecnn.datasets import MULTILABEL

CLASS_WEIGHTS = ("none", "balanced")


def count_labels(manifest, split="train"):
    """Segments of ``split`` labelled with each class (a list, in the manifest's class order)."""
    features = {"label": pipeline.SEGMENT_FEATURES["label"]}
    records = tf.data.TFRecordDataset(pipeline.shard_paths(manifest, split)).batch(1024)
    labels = records.map(lambda s: pipeline.decode_label(tf.io.parse_example(s, features)["label"],
                                                         len(manifest["classes"])))
    counts = np.zeros(len(manifest["classes"]), np.int64)
    for batch in labels:
        counts += batch.numpy().sum(axis=0).astype(np.int64)
    return counts.tolist()


def balanced_weights(counts, segments, task):
    """Per-class loss weights from train label counts; a class absent from train gets 1
    (it contributes no positive term to weigh)."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if task == MULTILABEL:
        weights = np.where(present, (segments - counts) / np.maximum(counts, 1), 1.0)
    else:
        weights = np.where(present, segments / (len(counts) * np.maximum(counts, 1)), 1.0)
    return weights.tolist()


def class_weight_record(mode, manifest):
    """What config.json keeps about the class weights of a new run (None for ``none``)."""
    if mode == "none":
        return None
    counts = count_labels(manifest)
    segments = manifest["splits"]["train"]["segments"]
    return {"mode": mode, "train_segments": dict(zip(manifest["classes"], counts)),
            "weights": balanced_weights(counts, segments, pipeline.spec_of(manifest).task)}


@keras.saving.register_keras_serializable(package="samplecnn")
class WeightedCrossEntropy(keras.losses.Loss):
    """Cross-entropy with per-class weights: categorical (each example weighted by its
    class's weight) or binary (each class's positive term weighted). With all weights 1 it
    equals Keras's categorical/binary cross-entropy."""

    def __init__(self, weights, multilabel, name="weighted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights, self.multilabel = list(weights), bool(multilabel)

    def call(self, y_true, y_pred):
        weights = keras.ops.convert_to_tensor(self.weights, dtype=y_pred.dtype)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        epsilon = keras.config.epsilon()
        if self.multilabel:
            p = keras.ops.clip(y_pred, epsilon, 1 - epsilon)
            terms = weights * y_true * keras.ops.log(p) + (1 - y_true) * keras.ops.log(1 - p)
            return -keras.ops.mean(terms, axis=-1)
        p = keras.ops.clip(y_pred / keras.ops.sum(y_pred, axis=-1, keepdims=True), epsilon, 1 - epsilon)
        return -keras.ops.sum(y_true * keras.ops.log(p), axis=-1) * keras.ops.sum(y_true * weights, axis=-1)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights, "multilabel": self.multilabel}


def weighted_loss(record, task):
    """The loss of a run whose config.json has class weights ``record``; None for unweighted runs."""
    return None if record is None else WeightedCrossEntropy(record["weights"], task == MULTILABEL)
