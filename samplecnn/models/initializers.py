"""The fan-in uniform initializer of the SampleCNN paper's code."""
import keras


@keras.saving.register_keras_serializable(package="samplecnn")
class FanInUniform(keras.initializers.VarianceScaling):
    """Uniform in [-limit, limit] with limit = sqrt(3 * scale / fan_in).

    fan_in is the product of every kernel dimension except the last (output channels):
    kernel_size * input_channels for a Conv1D kernel of shape (k, c_in, c_out), and
    input units for a Dense kernel. Weights then have variance scale / fan_in; the
    paper uses scale 1 for the strided first convolution and scale 2 (He) for the rest.
    """

    def __init__(self, scale=2.0, seed=None):
        super().__init__(scale=scale, mode="fan_in", distribution="uniform", seed=seed)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}
