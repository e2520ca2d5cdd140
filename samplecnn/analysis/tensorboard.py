"""Validation pictures in TensorBoard after every epoch (``train.py --tensorboard-images``)."""
import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

from samplecnn.analysis import report, sections

IMAGES = "images"
"""Sub-folder of the run's TensorBoard directory that holds the images."""


class ValidationImages(keras.callbacks.Callback):
    """Draws the validation segments' confusion matrix (single-label) or per-class AUC bars
    (multi-label) once per epoch, so a run's progress per class can be watched live."""

    def __init__(self, val_data, classes, multilabel, log_dir):
        super().__init__()
        self.val_data, self.classes, self.multilabel = val_data, list(classes), multilabel
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def on_epoch_end(self, epoch, logs=None):
        labels, scores = [], []
        for audio, label in self.val_data:
            scores.append(np.asarray(self.model.predict_on_batch(audio)))
            labels.append(label.numpy())
        labels, scores = np.concatenate(labels).astype(np.int64), np.concatenate(scores)
        if self.multilabel:
            figure, _ = sections.draw_auc_bars(sections.class_aucs(labels, scores, self.classes))
            name = "val_per_class_auc"
        else:
            counts = skm.confusion_matrix(labels.argmax(axis=1), scores.argmax(axis=1), labels=range(len(self.classes)))
            figure, _ = sections.draw_confusion(counts, self.classes)
            name = "val_confusion_matrix"
        image = tf.image.decode_png(report.png_bytes(figure), channels=4)[tf.newaxis]
        with self.writer.as_default():
            tf.summary.image(name, image, step=epoch + 1)
        self.writer.flush()
