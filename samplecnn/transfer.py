"""Fine-tuning: a new run that starts from the weights of a trained run.

The new model is built from the target data set's spec; every layer whose name and weight
shapes match a layer of the source is loaded, the others (at least the classifier when
the classes differ) keep their fresh initialization. The starting weights are written
into the run directory (init.weights.h5) before the first epoch, so the run resumes,
evaluates and predicts like any other without its source. The backbone (every layer
before the head) can be frozen, or trained at a fraction of the head's learning rate.
"""
import dataclasses
import logging
import pathlib

import keras

from samplecnn.models import HEAD_LAYERS, build_samplecnn
from samplecnn.records import file_sha256

log = logging.getLogger("samplecnn")

INIT_WEIGHTS = "init.weights.h5"
"""The fine-tuned run's starting weights, in its run directory."""

ARCHITECTURE_OPTIONS = ("block", "init_features", "multi", "amplifying_ratio")
"""Model options that shape the backbone: a source trained otherwise has no backbone to give."""


class TransferError(ValueError):
    """The source of --init-from cannot start this run."""


def backbone_layers(model):
    """Names of the layers with weights that are not part of the classifier head."""
    return [layer.name for layer in model.layers if layer.weights and layer.name not in HEAD_LAYERS]


def check_format(source_config, spec, source):
    """Raises TransferError when the run ``source`` (e.g. "--init-from DIR") was trained on
    another sample rate or segment length than data set ``spec`` holds."""
    theirs = source_config["spec"]
    if (theirs["sample_rate"], theirs["segment_samples"]) != (spec.sample_rate, spec.segment_samples):
        raise TransferError(
            f"{source} was trained on segments of {theirs['segment_samples']} samples at "
            f"{theirs['sample_rate']} Hz, but {spec.name} has segments of {spec.segment_samples} samples at "
            f"{spec.sample_rate} Hz; build {spec.name} with --sample-rate {theirs['sample_rate']} --segment-samples "
            f"{theirs['segment_samples']} to use it")


def check_architecture(source_config, model_config, source):
    """Raises TransferError when the source run's backbone is built otherwise than this run's."""
    for option in ARCHITECTURE_OPTIONS:
        source_value, value = source_config["model"][option], getattr(model_config, option)
        if source_value != value:
            flag = option.replace("_", "-")
            hint = (f"--{flag}" if source_value else f"--no{flag}") if isinstance(value, bool) \
                else f"--{flag} {source_value}"
            raise TransferError(f"{source} was trained with {option} {source_value!r}, this run builds "
                                f"{option} {value!r}; pass {hint} to fine-tune from it")


def load_matching(target, source):
    """Copies the weights of every layer of ``source`` whose name and weight shapes match a
    layer of ``target``; returns (loaded layer names, {skipped layer name: why})."""
    loaded, skipped = [], {}
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            theirs = source.get_layer(layer.name)
        except ValueError:
            skipped[layer.name] = "not in the source"
            continue
        shapes, source_shapes = [tuple(w.shape) for w in layer.weights], [tuple(w.shape) for w in theirs.weights]
        if shapes != source_shapes:
            skipped[layer.name] = f"weights {source_shapes} in the source, {shapes} here"
            continue
        layer.set_weights(theirs.get_weights())
        loaded.append(layer.name)
    return loaded, skipped


@dataclasses.dataclass
class Start:
    """The starting model of a fine-tuned run and what config.json records about it."""

    model: keras.Model
    record: dict

    def save(self, run_dir):
        self.model.save_weights(pathlib.Path(run_dir) / INIT_WEIGHTS)


def prepare(init_from, spec, model_config):
    """The Start of a run fine-tuned from ``init_from`` (a run directory, meaning its final
    checkpoint or else its best.h5, or a checkpoint file); TransferError or
    FileNotFoundError before anything is written."""
    from samplecnn import inference

    checkpoint, source_config = inference.load_config(init_from)
    check_format(source_config, spec, f"--init-from {init_from}")
    check_architecture(source_config, model_config, f"--init-from {init_from}")
    source, _ = inference.load_trained(checkpoint)
    model = build_samplecnn(model_config)
    loaded, skipped = load_matching(model, source)
    if not set(loaded) & set(backbone_layers(model)):
        raise TransferError(f"no backbone layer of --init-from {init_from} matches this model by name and weight "
                            "shapes: nothing would be fine-tuned")
    record = {"source": str(checkpoint.parent.resolve()), "checkpoint": str(checkpoint.resolve()),
              "sha256": file_sha256(checkpoint), "loaded": loaded, "skipped": skipped}
    log.info("fine-tuning from %s (sha256 %s): loaded %d layers, skipped %d: %s", checkpoint, record["sha256"][:12],
             len(loaded), len(skipped), ", ".join(f"{name} ({why})" for name, why in skipped.items()) or "none")
    return Start(model, record)


def initialize(model, run_dir):
    """Loads a fine-tuned run's starting weights into ``model``; False for other runs."""
    path = pathlib.Path(run_dir) / INIT_WEIGHTS
    if not path.exists():
        return False
    model.load_weights(path)
    return True


def freeze_backbone(model):
    """Trains only the head: frozen BatchNormalization layers also run in inference mode."""
    for name in backbone_layers(model):
        model.get_layer(name).trainable = False


@keras.saving.register_keras_serializable(package="samplecnn")
class BackboneScaledSGD(keras.optimizers.SGD):
    """SGD whose learning rate is multiplied by ``scale`` for the variables of
    ``scaled_layers`` (the backbone). Momentum is linear in the step, so this is exactly
    SGD at ``scale`` times the rate for those variables; both values are in the optimizer's
    config, so a run saved with it (last.keras) resumes with the same rates."""

    def __init__(self, scale=1.0, scaled_layers=(), **kwargs):
        super().__init__(**kwargs)
        self.scale, self.scaled_layers = scale, tuple(scaled_layers)

    def build(self, variables):
        super().build(variables)
        self._scaled = {self._get_variable_index(v) for v in variables if v.path.split("/")[0] in self.scaled_layers}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled:
            learning_rate = learning_rate * self.scale
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "scaled_layers": list(self.scaled_layers)}


def scale_backbone_lr(optimizer, model, scale):
    """``optimizer`` (SGD) with the learning rate of ``model``'s backbone multiplied by ``scale``."""
    return BackboneScaledSGD.from_config({**optimizer.get_config(), "scale": scale,
                                          "scaled_layers": backbone_layers(model)})
