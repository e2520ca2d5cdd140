"""Model zoo: shapes, outputs, parameter counts, save/load, custom blocks, config options."""
import numpy as np
import pytest

import keras
import samplecnn
from samplecnn.models import ModelConfig, build_samplecnn, list_blocks, register_block

BLOCKS = ["basic", "se", "res1", "res2", "rese1", "rese2"]

# Channel widths as the paper describes them (not computed by the package).
PAPER_WIDTHS = {
    "mtt": [128, 128, 256, 256, 256, 256, 256, 256, 512],
    "scd": [128, 128, 256, 256, 256, 256, 256, 512],
}
SEGMENT = {"mtt": 59049, "scd": 22050}


def conv(k, cin, cout):
    return k * cin * cout + cout


def bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def dense(i, o):
    return i * o + o


def se(c, ratio=0.125):
    hidden = int(round(c * ratio))
    return dense(c, hidden) + dense(hidden, c)


def expected_params(block, multi, widths, classes):
    """Counts parameters from the architecture description of DESIGN section 6."""
    total = conv(3, 1, 128) + bn(128)
    cin = 128
    for c in widths:
        if block in ("basic", "se"):
            total += conv(3, cin, c) + bn(c)
            total += se(c) if block == "se" else 0
        else:
            n = int(block[-1])
            total += conv(3, cin, c) + bn(c) + (n - 1) * (conv(3, c, c) + bn(c))
            total += se(c) if block.startswith("rese") else 0
            total += conv(1, cin, c) + bn(c) if cin != c else 0
        cin = c
    features = sum(widths[-3:]) if multi else widths[-1]
    return total + dense(features, features) + bn(features) + dense(features, classes)


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("dataset", ["mtt", "scd"])
def test_block_shapes_outputs_and_param_counts(dataset, block, multi):
    spec = samplecnn.get_spec(dataset)
    model = samplecnn.build_model(dataset, block=block, multi=multi)
    assert model.count_params() == expected_params(block, multi, PAPER_WIDTHS[dataset], spec.num_classes)

    x = np.random.default_rng(0).normal(size=(2, SEGMENT[dataset], 1)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, spec.num_classes)
    if spec.activation == "softmax":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    else:
        # Independent per-class probabilities (float32 sigmoid saturates to exactly 0 or 1).
        assert np.all((y >= 0) & (y <= 1)) and not np.allclose(y.sum(axis=1), 1.0)
    # Any length at least one receptive field works (variable-length input).
    longer = model.predict(np.concatenate([x, x[:, :9999]], axis=1), verbose=0)
    assert longer.shape == (2, spec.num_classes) and np.all(np.isfinite(longer))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_save_load_round_trip_without_custom_objects(tmp_path, suffix):
    model = samplecnn.build_model("scd", block="rese2", multi=True, init_features=16)
    x = np.random.default_rng(1).normal(size=(3, 22050, 1)).astype("float32")
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


LOAD_IN_A_FRESH_PROCESS = """
import sys
{imports}
print([keras.models.load_model(path).count_params() for path in sys.argv[1:]])
"""


@pytest.mark.parametrize("imports", ["import samplecnn\nimport keras",
                                     "import samplecnn\nimport tensorflow as tf\nkeras = tf.keras"])
def test_plain_load_model_works_once_samplecnn_is_imported(tmp_path, imports):
    import subprocess
    import sys

    from scripts import ENV

    model = samplecnn.build_model("scd", init_features=4)
    paths = [tmp_path / "model.h5", tmp_path / "model.keras"]
    for path in paths:
        model.save(path)
    result = subprocess.run([sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS.format(imports=imports), *paths], env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str([model.count_params()] * 2)


def test_data_tools_do_not_import_tensorflow():
    import subprocess
    import sys

    from scripts import ENV

    code = ("import sys, samplecnn, samplecnn.build, samplecnn.synth; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))")
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def test_block_registered_from_outside_builds_trains_and_saves(tmp_path):
    @register_block("test_double_conv")
    def double_conv(x, filters, config, name):
        for i in range(2):
            x = keras.layers.Conv1D(filters, 3, padding="same", activation="relu", name=f"{name}_c{i}")(x)
        return keras.layers.MaxPooling1D(3, name=f"{name}_pool")(x)

    assert "test_double_conv" in list_blocks()
    model = samplecnn.build_model("scd", block="test_double_conv", init_features=8)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
    x = np.random.default_rng(2).normal(size=(4, 22050, 1)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 3], 35)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    model.save(tmp_path / "custom.keras")
    loaded = keras.models.load_model(tmp_path / "custom.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_block("se")(lambda x, filters, config, name: x)


def test_unknown_block_names_the_registered_ones():
    with pytest.raises(ValueError, match="basic, res1, res2"):
        build_samplecnn(ModelConfig(block="nope"))


SMALL = dict(num_blocks=4, init_features=8, num_classes=5)


def small(**overrides):
    return build_samplecnn(ModelConfig(**{**SMALL, **overrides}))


def layer_names(model):
    return {layer.name for layer in model.layers}


def test_each_config_option_changes_the_model():
    base = small()
    assert layer_names(small(block="rese2")) != layer_names(base)
    assert "multi_level" in layer_names(small(multi=True)) and "multi_level" not in layer_names(base)
    assert len([n for n in layer_names(small(num_blocks=5)) if n.endswith("_pool")]) == 5
    assert small(init_features=16).get_layer("conv0_conv").filters == 16
    assert base.get_layer("block1_se_reduce").units == 1  # 8 * 0.125
    assert small(amplifying_ratio=0.5).get_layer("block1_se_reduce").units == 4
    assert base.get_layer("head_dropout").rate == 0.5
    assert small(dropout=0.3).get_layer("head_dropout").rate == 0.3
    assert small(num_classes=7).output_shape == (None, 7)

    x = np.random.default_rng(3).normal(size=(2, 243, 1)).astype("float32")
    sums = small(activation="softmax").predict(x, verbose=0).sum(axis=1)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    assert not np.allclose(base.predict(x, verbose=0).sum(axis=1), 1.0)


def test_weight_decay_adds_l2_losses_proportional_to_the_rate():
    assert len(small().losses) == 0
    decayed = small(weight_decay=1e-3)
    kernels = [w for w in decayed.trainable_weights if "kernel" in w.path]
    assert len(decayed.losses) == len(kernels) > 0
    expected = sum(1e-3 * float(np.sum(np.square(w.numpy()))) for w in kernels)
    np.testing.assert_allclose(float(sum(decayed.losses)), expected, rtol=1e-4)


def test_conv_kernels_follow_the_fan_in_uniform_initializer():
    model = samplecnn.build_model("mtt", block="basic")
    conv0 = model.get_layer("conv0_conv").kernel.numpy()  # fan_in 3, scale 1
    block3 = model.get_layer("block3_conv").kernel.numpy()  # fan_in 3 * 128, scale 2
    assert np.abs(conv0).max() <= 1.0 and np.abs(conv0).max() > 0.9
    limit = np.sqrt(3 * 2 / (3 * 128))
    assert np.abs(block3).max() <= limit and np.abs(block3).max() > 0.95 * limit
    np.testing.assert_allclose(block3.std(), limit / np.sqrt(3), rtol=0.02)


def test_build_model_takes_blocks_classes_and_activation_from_the_spec():
    for name, blocks, classes, activation in [("mtt", 9, 50, "sigmoid"), ("scd", 8, 35, "softmax"),
                                              ("dcs", 8, 17, "sigmoid")]:
        model = samplecnn.build_model(name, init_features=8)
        assert model.output_shape == (None, classes)
        assert model.get_layer("predictions").activation.__name__ == activation
        assert f"block{blocks}_pool" in layer_names(model) and f"block{blocks + 1}_pool" not in layer_names(model)


def kernel_layers(model):
    return [layer for layer in model.layers if getattr(layer, "kernel", None) is not None]


def test_2019_recipe_initializers_follow_the_2019_code():
    model = samplecnn.build_model("mtt", block="rese2", recipe="2019")
    block_convs = glorot = 0
    for layer in kernel_layers(model):
        kernel = layer.kernel.numpy()
        if isinstance(layer, keras.layers.Conv1D) and "shortcut" not in layer.name:
            k, c_in, _ = kernel.shape  # conv0 too: with one input channel both fan-ins are k
            np.testing.assert_allclose(kernel.std(), np.sqrt((2 if c_in > 1 else 1) / (k * c_in ** 2)), rtol=0.05)
            block_convs += c_in > 1
        else:  # shortcut convs, both SE dense layers, the head and the classifier
            assert isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform), layer.name
            fan_in, fan_out = np.prod(kernel.shape[:-1]), kernel.shape[-1]
            np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (fan_in + fan_out)), rtol=0.05)
            glorot += 1
    assert block_convs == 18 and glorot == 9 * 2 + 2 + 2  # SE pairs, 2 shortcuts, head and logits


def test_samplecnn_recipe_block_convs_are_he_uniform():
    model = samplecnn.build_model("mtt", block="rese2")
    kernel = model.get_layer("block5_2_conv").kernel.numpy()
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (3 * 256)), rtol=0.05)


def test_2019_recipe_puts_weight_decay_on_conv_kernels_only():
    model = samplecnn.build_model("scd", block="rese1", init_features=16, recipe="2019", weight_decay=1e-3)
    convs = [layer for layer in kernel_layers(model) if isinstance(layer, keras.layers.Conv1D)]
    assert len(convs) == 1 + 8 + 2 and len(kernel_layers(model)) > len(convs)  # conv0, blocks, shortcuts
    assert len(model.losses) == len(convs)
    expected = sum(1e-3 * float(np.sum(np.square(layer.kernel.numpy()))) for layer in convs)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-4)


def test_unknown_recipe_names_the_registered_ones():
    with pytest.raises(ValueError, match="2019, samplecnn"):
        build_samplecnn(ModelConfig(recipe="nope"))


@pytest.mark.parametrize("recipe", ["2019", "samplecnn"])
def test_recipe_models_save_and_load_without_custom_objects(tmp_path, recipe):
    model = samplecnn.build_model("scd", block="res2", init_features=8, recipe=recipe)
    x = np.random.default_rng(4).normal(size=(2, 22050, 1)).astype("float32")
    model.save(tmp_path / "m.h5")
    np.testing.assert_array_equal(model.predict(x, verbose=0),
                                  keras.models.load_model(tmp_path / "m.h5").predict(x, verbose=0))


def test_blocks_pool_before_the_relu_with_the_values_and_gradients_of_relu_then_pool():
    import tensorflow as tf

    from samplecnn.models.blocks import relu_pool

    inputs = keras.Input((81, 4))
    pooled_first = keras.Model(inputs, relu_pool(inputs, "block"))
    paper_order = keras.Model(inputs, keras.layers.MaxPooling1D(3)(keras.layers.ReLU()(inputs)))
    x = tf.constant(np.random.default_rng(0).standard_normal((3, 81, 4)).astype("float32"))
    results = []
    for model in (paper_order, pooled_first):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x)
        results.append((y.numpy(), tape.gradient(y, x, output_gradients=tf.reverse(y, [1]) + 1).numpy()))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    assert [layer.name for layer in pooled_first.layers[1:]] == ["block_pool", "block_relu"]
