"""Block registry and the block zoo of the SampleCNN paper.

A block is a function ``fn(x, filters, config, name) -> tensor`` that turns a
(batch, time, channels) tensor into one with ``filters`` channels and a third of the
time steps. ``@register_block("name")`` makes ``--block name`` work everywhere.
Blocks must be built from standard or registered Keras layers so saved models load
with plain ``keras.models.load_model``.

Blocks of other packages arrive as plugins: a module imported with :func:`import_module`
(``--import MODULE``), or an entry point of the ``samplecnn.blocks`` group, loaded when
its name is first asked for. The module a run's block came from is recorded with the
run, so the model loads again wherever that module can be imported.
"""
import importlib
import importlib.metadata

import keras
from keras import layers

from samplecnn.models.initializers import kernel_initializer
from samplecnn.models.layers import BatchNormalization, Conv1D
from samplecnn.recipes import get_recipe

ENTRY_POINT_GROUP = "samplecnn.blocks"
"""Entry points ``NAME = "package.module:block_function"`` register block NAME."""

_BLOCKS = {}
_MODULES = {}
"""Block name -> the plugin module that registered it."""


class PluginError(ImportError):
    """A module that provides blocks cannot be imported."""

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
    """Names of all registered blocks and of the blocks installed packages provide, sorted."""
    return sorted(set(_BLOCKS) | {entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def get_block(name):
    """The block function registered as ``name``, loading the plugin that provides it if needed."""
    if name not in _BLOCKS:
        _load_entry_point(name)
    try:
        return _BLOCKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown block {name!r}; registered blocks: {', '.join(list_blocks())}. "
            "Register new ones with @samplecnn.models.register_block(name), in a module given to --import."
        ) from None


def _load_entry_point(name):
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            block = entry.load()
        except ImportError as error:
            raise PluginError(f"block {name!r} is provided by {entry.value!r} (entry point of package "
                              f"{entry.dist.name if entry.dist else '?'}), which cannot be imported: {error}") from None
        register_block(name)(block)
        _MODULES[name] = entry.module
        return


def import_module(name, needed_for=None):
    """Imports module ``name`` (e.g. one that registers blocks) and remembers it as the
    source of the blocks it registers; ``needed_for`` says why in the error."""
    before = set(_BLOCKS)
    try:
        importlib.import_module(name)
    except ImportError as error:
        why = f" (it provides {needed_for})" if needed_for else ""
        raise PluginError(f"cannot import module {name!r}{why}: {error}. Install its package or add its folder "
                          "to PYTHONPATH") from None
    _MODULES.update(dict.fromkeys(set(_BLOCKS) - before, name))


def block_module(name):
    """The module to import to have block ``name`` again: None for blocks of samplecnn
    itself and of a script run as ``__main__``."""
    module = _MODULES.get(name) or get_block(name).__module__
    return None if module == "__main__" or module.split(".")[0] == "samplecnn" else module


def regularizer(config, role="conv"):
    """L2 weight decay for a kernel of ``role`` when ``config``'s recipe decays that role
    (samplecnn.recipes.ROLES), else None; None when ``config.weight_decay`` is 0."""
    decayed = config.weight_decay and role in get_recipe(config.recipe).weight_decay_roles
    return keras.regularizers.L2(config.weight_decay) if decayed else None


def conv_bn(x, filters, config, name, kernel_size=3, role="conv"):
    """Conv1D ('same' padding; the recipe's initializer and weight decay for ``role``) + BatchNorm."""
    x = Conv1D(
        filters,
        kernel_size,
        padding="same",
        kernel_initializer=kernel_initializer(config, role),
        kernel_regularizer=regularizer(config, role),
        name=f"{name}_conv",
    )(x)
    return BatchNormalization(name=f"{name}_bn")(x)


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


def relu_pool(x, name):
    """ReLU and MaxPool(3), pooled first: the same values and gradients (max commutes with
    ReLU), with the ReLU on a third of the steps."""
    x = layers.MaxPooling1D(3, name=f"{name}_pool")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register_block("basic")
def basic_block(x, filters, config, name):
    """Conv(3) + BN + ReLU + MaxPool(3)."""
    return relu_pool(conv_bn(x, filters, config, name), name)


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
    return relu_pool(x, name)


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
