"""The SampleCNN model builder: strided conv0, a stack of blocks, the classifier head."""
import dataclasses

import keras
from keras import layers

from samplecnn.models.blocks import get_block, regularizer
from samplecnn.models.initializers import kernel_initializer
from samplecnn.models.layers import BatchNormalization, Conv1D
from samplecnn.recipes import DEFAULT_RECIPE, get_recipe

MULTI_LEVEL_BLOCKS = 3
"""Multi-level aggregation concatenates the global max pools of this many last blocks."""

EMBEDDING_LAYER = "embedding"
"""Name of the head's hidden layer output (after ReLU): the default embedding."""

HEAD_LAYERS = ("head_dense", "head_bn", "logits")
"""The classifier head's layers with weights; every other layer with weights is the backbone."""


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild a SampleCNN; stored in a run's config.json.

    ``recipe`` (samplecnn.recipes) chooses each kernel's initializer and which kernels get
    ``weight_decay``.
    """

    block: str = "se"
    multi: bool = False
    num_blocks: int = 9
    init_features: int = 128
    amplifying_ratio: float = 0.125
    dropout: float = 0.5
    weight_decay: float = 0.0
    num_classes: int = 50
    activation: str = "sigmoid"
    recipe: str = DEFAULT_RECIPE

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown ModelConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def for_spec(cls, spec, **options):
        """The config for a data set's spec: its block count, classes and output activation,
        unless ``options`` say otherwise."""
        derived = dict(num_blocks=spec.num_blocks, num_classes=spec.num_classes, activation=spec.activation)
        return cls(**{**derived, **options})

    @property
    def signature(self):
        """Short name of the architecture, e.g. ``se`` or ``rese2_multi``."""
        return f"{self.block}_multi" if self.multi else self.block


def block_filters(num_blocks, init_features):
    """Channels of each block: doubled at the third block and again at the last one.

    For 9 blocks and 128 initial features: 128, 128, 256 x 6, 512 (the paper's 3^9 model).
    """
    filters, widths = init_features, []
    for i in range(num_blocks):
        if i == 2 or i == num_blocks - 1:
            filters *= 2
        widths.append(filters)
    return widths


def build_samplecnn(config):
    """Builds an uncompiled SampleCNN for ``(batch, samples, 1)`` waveforms of any length.

    >>> model = build_samplecnn(ModelConfig(block="rese2", num_blocks=8, num_classes=35,
    ...                                     activation="softmax"))
    >>> model.output_shape
    (None, 35)
    """
    if config.activation not in ("sigmoid", "softmax"):
        raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {config.activation!r}")
    if config.multi and config.num_blocks < MULTI_LEVEL_BLOCKS:
        raise ValueError(f"multi-level aggregation needs at least {MULTI_LEVEL_BLOCKS} blocks")
    get_recipe(config.recipe)
    block = get_block(config.block)
    inputs = keras.Input(shape=(None, 1), name="audio")
    x = Conv1D(config.init_features, 3, strides=3, padding="valid",
                      kernel_initializer=kernel_initializer(config, "conv0"),
                      kernel_regularizer=regularizer(config, "conv0"), name="conv0_conv")(inputs)
    x = BatchNormalization(name="conv0_bn")(x)
    x = layers.ReLU(name="conv0_relu")(x)

    block_outputs = []
    for i, filters in enumerate(block_filters(config.num_blocks, config.init_features)):
        x = block(x, filters, config, f"block{i + 1}")
        block_outputs.append(x)

    levels = block_outputs[-MULTI_LEVEL_BLOCKS:] if config.multi else block_outputs[-1:]
    pooled = [layers.GlobalMaxPooling1D(name=f"level{i + 1}_gmp")(out)
              for i, out in enumerate(levels)]
    x = layers.Concatenate(name="multi_level")(pooled) if len(pooled) > 1 else pooled[0]

    width = x.shape[-1]
    x = layers.Dense(width, kernel_initializer=kernel_initializer(config, "head"),
                     kernel_regularizer=regularizer(config, "head"), name="head_dense")(x)
    x = BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name=EMBEDDING_LAYER)(x)
    x = layers.Dropout(config.dropout, name="head_dropout")(x)
    x = layers.Dense(config.num_classes, kernel_initializer=kernel_initializer(config, "logits"),
                     kernel_regularizer=regularizer(config, "logits"), name="logits")(x)
    outputs = layers.Activation(config.activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"samplecnn_{config.signature}")
