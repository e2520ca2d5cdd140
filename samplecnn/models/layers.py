"""Conv1D and BatchNormalization that train faster on CPUs under TensorFlow.

They are Keras's layers with the same weights, config and arithmetic; only the kernels
TensorFlow runs for a training step differ, and results agree within float rounding:

* ``Conv1D`` (stride 1, kernel 1 or 3, ``same`` padding) in training: the kernel's gradient is K matrix
  products of the flattened input and output gradient. TensorFlow's filter-gradient
  convolution (oneDNN) took 3.8x as long on the first block's 19683 x 128 maps.
* ``BatchNormalization`` in training: TensorFlow's fused kernel (statistics and output in
  two passes, forward and backward) instead of Keras's separate moments and normalize ops,
  2.6x faster on the same maps.

bench/README.md ("Where a training step went") has the measurements. Every other case
(other backends, GPUs, strides, dilation, groups, masks, synchronized or renormalized
statistics, inference) runs Keras's own code. Both are registered, so models saved with
them load wherever ``samplecnn`` is imported; models saved with Keras's classes still load.
"""
import functools

import keras
from keras import layers

FAST_KERNEL_SIZES = (1, 3)
"""Kernel sizes of the matrix-product kernel gradient: a tap then reaches at most one step
into the neighbouring clip of the flattened batch, which the gradient corrects."""


@functools.cache
def _fast_paths():
    """True where these layers' kernels are measured faster: TensorFlow on a machine
    without a GPU (GPUs keep Keras's kernels until measured there)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


@keras.saving.register_keras_serializable(package="samplecnn")
class Conv1D(layers.Conv1D):
    """``keras.layers.Conv1D`` whose kernel gradient is computed as matrix products."""

    def call(self, inputs, training=None):
        fast = (training and _fast_paths() and self.strides == (1,) and self.dilation_rate == (1,) and self.groups == 1
                and self.padding == "same" and self.data_format == "channels_last"
                and self.kernel_size[0] in FAST_KERNEL_SIZES)
        if not fast:  # inference too: Keras's graph lets TensorFlow fuse the convolution with its bias
            return super().call(inputs)
        outputs = _conv1d_same(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


def _conv1d_same(inputs, kernel):
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            flipped = tf.transpose(tf.reverse(w, [0]), [0, 2, 1])  # dx is dy convolved with the mirrored kernel
            return tf.nn.conv1d(dy, flipped, 1, "SAME"), _kernel_gradient(x, dy, w.shape[0])

        return tf.nn.conv1d(x, w, 1, "SAME"), grad

    return conv(inputs, tf.cast(kernel, inputs.dtype))  # a tensor: the gradient goes through the read


def _kernel_gradient(x, dy, kernel_size):
    """d loss / d kernel of a stride-1 ``same`` convolution: tap k pairs x[t + k - K//2]
    with dy[t]. On the (batch * time, channels) views a shift is a slice of rows, one
    product each; the pairs it forms across two clips of the batch are subtracted."""
    import tensorflow as tf

    steps = tf.shape(x)[1]
    flat_x = tf.reshape(x, (-1, x.shape[-1]))
    flat_dy = tf.reshape(dy, (-1, dy.shape[-1]))
    taps = []
    for k in range(kernel_size):
        shift = k - kernel_size // 2
        if shift == 0:
            taps.append(tf.matmul(flat_x, flat_dy, transpose_a=True))
        elif shift > 0:  # x's first steps of clip b + 1 were paired with dy's last steps of clip b
            crossed = tf.einsum("btc,btd->cd", x[1:, :shift], dy[:-1, steps - shift:])
            taps.append(tf.matmul(flat_x[shift:], flat_dy[:-shift], transpose_a=True) - crossed)
        else:
            crossed = tf.einsum("btc,btd->cd", x[:-1, steps + shift:], dy[1:, :-shift])
            taps.append(tf.matmul(flat_x[:shift], flat_dy[-shift:], transpose_a=True) - crossed)
    return tf.stack(taps)


@keras.saving.register_keras_serializable(package="samplecnn")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that trains with TensorFlow's fused kernel."""

    def call(self, inputs, training=None, mask=None):
        fast = (training and self.trainable and mask is None and _fast_paths() and not self.synchronized
                and not getattr(self, "renorm", False) and self.axis in (-1, len(inputs.shape) - 1))
        return self._fused_training(inputs) if fast else super().call(inputs, training=training, mask=mask)

    def _fused_training(self, inputs):
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras: statistics in float32 under mixed precision
        channels = x.shape[-1]
        flat = tf.reshape(x, (1, 1, -1, channels))
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones(channels)
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros(channels)
        y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=flat, scale=scale, offset=offset, mean=tf.zeros(0), variance=tf.zeros(0), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        count = tf.cast(tf.shape(flat)[2], "float32")
        variance = unbiased * (count - 1) / count  # Keras's moving variance follows the biased one
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(tf.reshape(y, tf.shape(x)), self.compute_dtype)
