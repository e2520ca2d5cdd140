"""Block registry and the block zoo of the SampleCNN paper.

A block is a function ``fn(x, filters, config, name) -> tensor`` that turns a
(batch, time, channels) tensor into one with ``filters`` channels and a third of the
time steps. ``@register_block("name")`` makes ``--block name`` work everywhere.
Blocks must be built from standard or registered Keras layers so saved models load
with plain ``keras.models.load_model``.
"""
import keras
from keras import layers

from samplecnn.models.initializers import kernel_initializer
from samplecnn.recipes import get_recipe

_BLOCKS = {}

RESIDUAL_DROPOUT = 0.2
"""Dropout between the convolutions of a two-conv residual branch (paper's value)."""


def register_block(name):
    """Decorator that registers ``fn(x, filters, config, name)`` as block ``name``."""

    def decorator(fn):
        if name in _BLOCKS and _BLOCKS[name] is not fn:
            raise ValueError(f"A block named {name!r} is already registered; choose another name.")
        _BLOCKS[name] = fn
        return fn

    return decorator


def list_blocks():
    """Names of all registered blocks, sorted."""
    return sorted(_BLOCKS)


def get_block(name):
    """The block function registered as ``name``."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown block {name!r}; registered blocks: {', '.join(list_blocks())}. "
            "Register new ones with @samplecnn.models.register_block(name)."
        ) from None


def regularizer(config, role="conv"):
    """L2 weight decay for a kernel of ``role`` when ``config``'s recipe decays that role
    (samplecnn.recipes.ROLES), else None; None when ``config.weight_decay`` is 0."""
    decayed = config.weight_decay and role in get_recipe(config.recipe).weight_decay_roles
    return keras.regularizers.L2(config.weight_decay) if decayed else None


def conv_bn(x, filters, config, name, kernel_size=3, role="conv"):
    """Conv1D ('same' padding; the recipe's initializer and weight decay for ``role``) + BatchNorm."""
    x = layers.Conv1D(
        filters,
        kernel_size,
        padding="same",
        kernel_initializer=kernel_initializer(config, role),
        kernel_regularizer=regularizer(config, role),
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def squeeze_excitation(x, config, name):
    """Channel re-weighting: GAP -> Dense(C * ratio, relu) -> Dense(C, sigmoid) -> scale."""
    channels = x.shape[-1]
    hidden = max(1, int(round(channels * config.amplifying_ratio)))
    s = layers.GlobalAveragePooling1D(name=f"{name}_se_squeeze")(x)
    s = layers.Dense(hidden, activation="relu", kernel_initializer=kernel_initializer(config, "se_reduce"),
                     kernel_regularizer=regularizer(config, "se_reduce"), name=f"{name}_se_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", kernel_initializer=kernel_initializer(config, "se_expand"),
                     kernel_regularizer=regularizer(config, "se_expand"), name=f"{name}_se_expand")(s)
    s = layers.Reshape((1, channels), name=f"{name}_se_reshape")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


@register_block("basic")
def basic_block(x, filters, config, name):
    """Conv(3) + BN + ReLU + MaxPool(3)."""
    x = conv_bn(x, filters, config, name)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling1D(3, name=f"{name}_pool")(x)


@register_block("se")
def se_block(x, filters, config, name):
    """The basic block with squeeze-excitation after the pooling."""
    x = basic_block(x, filters, config, name)
    return squeeze_excitation(x, config, name)


def residual_block(x, filters, config, name, num_convs, use_se):
    """N convs (ReLU + Dropout between), optional SE, shortcut, add, ReLU, MaxPool(3)."""
    shortcut = x
    for i in range(num_convs):
        if i > 0:
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
            x = layers.Dropout(RESIDUAL_DROPOUT, name=f"{name}_dropout{i}")(x)
        x = conv_bn(x, filters, config, f"{name}_{i + 1}")
    if use_se:
        x = squeeze_excitation(x, config, name)
    if shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, config, f"{name}_shortcut", kernel_size=1, role="shortcut")
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling1D(3, name=f"{name}_pool")(x)


def _register_residual(num_convs, use_se):
    name = f"{'rese' if use_se else 'res'}{num_convs}"

    def block(x, filters, config, name):
        return residual_block(x, filters, config, name, num_convs, use_se)

    block.__name__ = f"{name}_block"
    block.__doc__ = f"Residual block with {num_convs} conv(s){' and SE' if use_se else ''}."
    register_block(name)(block)


for _num_convs in (1, 2):
    for _use_se in (False, True):
        _register_residual(_num_convs, _use_se)
