"""samplecnn's Conv1D and BatchNormalization: Keras's results through faster training kernels."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from samplecnn.models import ModelConfig, build_samplecnn
from samplecnn.models import layers as fast

RNG = np.random.default_rng(0)


def random(*shape, scale=1.0, shift=0.0):
    return tf.constant((RNG.standard_normal(shape) * scale + shift).astype("float32"))


def training_step(layer, x, dy):
    """Traced once: the layer's output, the gradients of <output, dy> for the input and every
    trainable weight, and the op types TensorFlow ran."""

    @tf.function
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return [y] + tape.gradient(y, [x] + layer.trainable_variables, output_gradients=dy)

    ops = {op.type for op in step.get_concrete_function(x, dy).graph.get_operations()}
    return [t.numpy() for t in step(x, dy)], ops


def twins(keras_layer, samplecnn_layer, shape):
    """The two layers built for ``shape`` with the same weights."""
    keras_layer.build(shape)
    samplecnn_layer.build(shape)
    samplecnn_layer.set_weights(keras_layer.get_weights())
    return keras_layer, samplecnn_layer


def assert_close(expected, actual, rtol):
    for e, a in zip(expected, actual, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * np.abs(e).max())


@pytest.mark.parametrize("kernel_size, batch, steps", [(3, 4, 81), (3, 1, 5), (3, 3, 1), (1, 3, 9)])
def test_conv1d_equals_keras_without_the_filter_gradient_convolution(kernel_size, batch, steps):
    """The kernel gradient pairs steps across clips of the flattened batch and subtracts them
    again: one clip, one step per clip and a pointwise kernel are the edge cases."""
    reference, ours = twins(keras.layers.Conv1D(16, kernel_size, padding="same"),
                            fast.Conv1D(16, kernel_size, padding="same"), (batch, steps, 8))
    x, dy = random(batch, steps, 8), random(batch, steps, 16)
    expected, reference_ops = training_step(reference, x, dy)
    actual, ops = training_step(ours, x, dy)
    assert_close(expected, actual, rtol=1e-5)
    assert "Conv2DBackpropFilter" in reference_ops and "Conv2DBackpropFilter" not in ops
    assert "MatMul" in ops
    np.testing.assert_allclose(ours(x, training=False), reference(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("options", [dict(kernel_size=3, strides=3, padding="valid"), dict(kernel_size=5, padding="same"),
                                     dict(kernel_size=3, padding="same", dilation_rate=2),
                                     dict(kernel_size=3, padding="causal")])
def test_conv1d_keeps_keras_kernels_where_the_fast_one_does_not_apply(options):
    reference, ours = twins(keras.layers.Conv1D(4, **options), fast.Conv1D(4, **options), (2, 27, 3))
    x = random(2, 27, 3)
    dy = tf.ones_like(reference(x))
    expected, _ = training_step(reference, x, dy)
    actual, ops = training_step(ours, x, dy)
    assert_close(expected, actual, rtol=1e-6)
    assert "Conv2DBackpropFilter" in ops


@pytest.mark.parametrize("shape", [(4, 50, 6), (5, 6), (1, 6)])
def test_batch_normalization_trains_like_keras_with_the_fused_kernel(shape):
    """Outputs, gradients and the moving statistics (Keras's biased batch variance), also for
    the head's 2-D input and a batch of one row."""
    reference, ours = twins(keras.layers.BatchNormalization(), fast.BatchNormalization(), shape)
    x, dy = random(*shape, scale=3.0, shift=2.0), random(*shape)
    expected, reference_ops = training_step(reference, x, dy)
    actual, ops = training_step(ours, x, dy)
    assert_close(expected, actual, rtol=1e-5)
    assert_close([reference.moving_mean.numpy(), reference.moving_variance.numpy()],
                 [ours.moving_mean.numpy(), ours.moving_variance.numpy()], rtol=1e-6)
    assert "FusedBatchNormV3" in ops and "FusedBatchNormV3" not in reference_ops
    assert not np.array_equal(ours.moving_mean.numpy(), np.zeros(6))


def test_batch_normalization_inference_and_frozen_layers_use_the_moving_statistics():
    reference, ours = twins(keras.layers.BatchNormalization(), fast.BatchNormalization(), (4, 10, 6))
    x = random(4, 10, 6, scale=3.0, shift=2.0)
    for layer in (reference, ours):
        layer(x, training=True)
    np.testing.assert_allclose(ours(x, training=False), reference(x, training=False), rtol=1e-5, atol=1e-5)
    ours.trainable = False
    before = ours.moving_mean.numpy()
    np.testing.assert_allclose(ours(x, training=True), reference(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours.moving_mean.numpy(), before)


def test_models_save_these_layers_and_keras_layers_still_load(tmp_path):
    model = build_samplecnn(ModelConfig(block="rese2", num_blocks=3, init_features=8, num_classes=4))
    classes = {type(layer) for layer in model.layers}
    assert fast.Conv1D in classes and fast.BatchNormalization in classes
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert {type(layer) for layer in loaded.layers} == classes
    x = random(2, 243, 1)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    # a model saved with Keras's own classes, as before these layers existed
    inputs = keras.Input((None, 1))
    outputs = keras.layers.BatchNormalization(name="conv0_bn")(keras.layers.Conv1D(8, 3, strides=3, name="conv0_conv")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "keras.keras")
    old = keras.models.load_model(tmp_path / "keras.keras")
    assert type(old.get_layer("conv0_conv")) is keras.layers.Conv1D


def without_dropout(model, keras_layers=False):
    """The same model and weights, dropout off (its masks are random); with ``keras_layers``
    built from Keras's Conv1D and BatchNormalization."""
    stock = {fast.Conv1D: keras.layers.Conv1D, fast.BatchNormalization: keras.layers.BatchNormalization}

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            config["rate"] = 0.0
        return (stock.get(type(layer), type(layer)) if keras_layers else type(layer)).from_config(config)

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


@pytest.mark.parametrize("block", ["se", "rese2"])
def test_a_training_step_of_the_whole_model_equals_keras(block):
    """Loss, every gradient and every moving statistic after one SGD step of a SampleCNN."""
    built = build_samplecnn(ModelConfig(block=block, num_blocks=4, init_features=16, num_classes=5))
    model, twin = without_dropout(built), without_dropout(built, keras_layers=True)
    assert fast.Conv1D in {type(layer) for layer in model.layers}
    assert not {fast.Conv1D, fast.BatchNormalization} & {type(layer) for layer in twin.layers}
    x, y = random(6, 729, 1), tf.constant(np.eye(5, dtype="float32")[RNG.integers(0, 5, 6)])
    results = []
    for m in (twin, model):
        m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="binary_crossentropy")
        with tf.GradientTape() as tape:
            loss = m.compute_loss(x=x, y=y, y_pred=m(x, training=True))
        gradients = tape.gradient(loss, m.trainable_variables)
        m.optimizer.apply_gradients(zip(gradients, m.trainable_variables))
        results.append((loss.numpy(), [g.numpy() for g in gradients], [w.numpy() for w in m.weights]))
    (expected_loss, expected_gradients, expected_weights), (loss, gradients, weights) = results
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    scale = max(np.abs(g).max() for g in expected_gradients)
    for expected, actual in zip(expected_gradients, gradients, strict=True):
        # atol: the gradient of a conv bias before BatchNorm is zero up to rounding
        np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=1e-4 * scale)
    for expected, actual in zip(expected_weights, weights, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
