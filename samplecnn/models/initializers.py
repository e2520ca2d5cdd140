"""Kernel initializers, and the one a recipe chooses for each kernel of a SampleCNN."""
import math

import keras

from samplecnn.recipes import get_recipe


@keras.saving.register_keras_serializable(package="samplecnn")
class FanInUniform(keras.initializers.VarianceScaling):
    """Uniform in [-limit, limit] with limit = sqrt(3 * scale / fan_in): the standard
    LeCun (scale 1) and He (scale 2) uniform rules, not the 2019 code's rule.

    fan_in is the product of every kernel dimension except the last (output channels):
    kernel_size * input_channels for a Conv1D kernel of shape (k, c_in, c_out), and
    input units for a Dense kernel. Weights then have variance scale / fan_in.
    """

    def __init__(self, scale=2.0, seed=None):
        super().__init__(scale=scale, mode="fan_in", distribution="uniform", seed=seed)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package="samplecnn")
class SquaredFanInUniform(keras.initializers.Initializer):
    """The 2019 code's ``taejun_uniform``: uniform with variance scale / fan_in where
    fan_in = kernel_size * in_channels**2 for a Conv1D kernel (k, c_in, c_out).

    Its author noted that the fan-in should have been kernel_size * in_channels (the He
    rule of :class:`FanInUniform`); for one input channel (the first convolution) both
    agree, for a block conv of c_in channels the weights are sqrt(c_in) times smaller.
    """

    def __init__(self, scale=2.0, seed=None):
        self.scale, self.seed = scale, seed

    def __call__(self, shape, dtype=None):
        if len(shape) != 3:
            raise ValueError(f"SquaredFanInUniform is for Conv1D kernels (k, c_in, c_out), got shape {shape}")
        kernel_size, in_channels, _ = shape
        limit = math.sqrt(3.0 * self.scale / max(1.0, kernel_size * in_channels ** 2))
        return keras.initializers.RandomUniform(-limit, limit, seed=self.seed)(shape, dtype=dtype)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


INITIALIZERS = {
    "fan_in_uniform_1": lambda: FanInUniform(scale=1.0),
    "fan_in_uniform_2": lambda: FanInUniform(scale=2.0),
    "squared_fan_in_uniform_1": lambda: SquaredFanInUniform(scale=1.0),
    "squared_fan_in_uniform_2": lambda: SquaredFanInUniform(scale=2.0),
    "glorot_uniform": keras.initializers.GlorotUniform,
}
"""Initializers a recipe can name, each a factory of a fresh initializer."""


def kernel_initializer(config, role="conv"):
    """The initializer that ``config``'s recipe chooses for a kernel of ``role``
    (see samplecnn.recipes.ROLES)."""
    return INITIALIZERS[get_recipe(config.recipe).initializers[role]]()
