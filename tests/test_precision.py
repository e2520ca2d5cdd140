import json
import subprocess

import keras
import pytest

import samplecnn
from samplecnn import inference, pipeline, precision, training
from samplecnn.deploy import export
from samplecnn.models import ModelConfig, build_samplecnn
from scripts import ENV, EPOCH_SCHEDULE, TINY_NET, command


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLECNN_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "precision.json"
    precision.set_policy(precision.FLOAT32)


def tiny_model_factory(calls):
    def make_model():
        calls.append(keras.mixed_precision.global_policy().name)
        model = build_samplecnn(ModelConfig(num_blocks=3, init_features=4, num_classes=3, activation="softmax"))
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        return model
    return make_model


def choose(calls, key="tiny"):
    return precision.choose(True, tiny_model_factory(calls), (4, 81, 1), 3, key)


def test_policy_set_for_bfloat16_keeps_float32_predictions():
    try:
        precision.set_policy(precision.BFLOAT16)
        model = build_samplecnn(ModelConfig(num_blocks=3, init_features=4, num_classes=2))
        assert model.get_layer("conv0_conv").compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"
    finally:
        precision.set_policy(precision.FLOAT32)


def test_not_requested_is_float32_without_a_probe(cache):
    calls = []
    choice = precision.choose(False, tiny_model_factory(calls), (4, 81, 1), 3, "tiny")
    assert choice == precision.Choice("float32", "mixed precision not requested")
    assert calls == [] and not cache.exists()


def test_probe_measures_both_precisions_and_caches_the_speedup(cache):
    calls = []
    choice = choose(calls)
    assert calls == ["float32", "mixed_bfloat16"]
    speedup = json.loads(cache.read_text())[precision.machine_key("tiny")]
    assert speedup > 0
    expected = precision.BFLOAT16 if speedup >= precision.MIN_SPEEDUP else precision.FLOAT32
    assert choice.policy == expected and f"{speedup:.2f}x" in choice.reason and "measured now" in choice.reason
    again = choose(calls)
    assert calls == ["float32", "mixed_bfloat16"]  # no second probe
    assert again.policy == choice.policy and "measured earlier on this machine" in again.reason
    assert keras.mixed_precision.global_policy().name == "float32"


def test_speedups_measured_by_another_samplecnn_are_measured_again(cache, monkeypatch):
    """Its training kernels decide what bfloat16 gains: a new version probes anew."""
    calls = []
    choose(calls)
    monkeypatch.setattr(samplecnn, "__version__", "0.0.1")
    assert "measured now" in choose(calls).reason
    assert calls == ["float32", "mixed_bfloat16"] * 2 and len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("speedup, policy, words", [
    (0.81, "float32", "stays in float32: bfloat16 trains only 0.81x as fast"),
    (1.03, "float32", "it must reach 1.05x"),
    (1.29, "mixed_bfloat16", "bfloat16 trains 1.29x as fast as float32 on this CPU"),
])
def test_a_cached_speedup_decides_without_building_a_model(cache, speedup, policy, words):
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({precision.machine_key("tiny"): speedup}))
    calls = []
    choice = choose(calls)
    assert calls == [] and choice.policy == policy and words in choice.reason


def test_multi_worker_runs_on_cpus_stay_in_float32_without_measuring(cache):
    calls = []
    choice = precision.choose(True, tiny_model_factory(calls), (4, 81, 1), 3, "tiny", measure=False)
    assert calls == [] and choice.policy == "float32" and "multi-worker" in choice.reason and not cache.exists()


@pytest.mark.parametrize("recipe, policies, words", [
    ("samplecnn", {"float32", "mixed_bfloat16"}, "measured now"),
    ("2019", {"float32"}, "mixed precision not requested"),
])
def test_train_py_takes_the_recipes_precision(tones, tmp_path, recipe, policies, words):
    """The samplecnn recipe probes by default (the 2019 code computed in float32), and the
    policy follows the measured speed-up; --nomixed-precision is what the other tests use."""
    cache = tmp_path / "cache"
    result = subprocess.run(command("train.py", "tones", "--data-dir", tones, "--log-dir", tmp_path / "log",
                                    "--recipe", recipe, "--num-stages", "1", "--max-epochs", "1", *TINY_NET,
                                    *EPOCH_SCHEDULE),
                            env={**ENV, "SAMPLECNN_CACHE": str(cache)}, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "log").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    choice = config["precision"]
    assert config["train"]["mixed_precision"] == (recipe == "samplecnn")
    assert choice["policy"] in policies and words in choice["reason"]
    if recipe == "samplecnn":
        (speedup,) = json.loads((cache / "precision.json").read_text()).values()
        assert (choice["policy"] == "mixed_bfloat16") == (speedup >= precision.MIN_SPEEDUP)
        assert f"mixed precision: {choice['policy']} ({choice['reason']})" in result.stderr
    else:
        assert not cache.exists()


@pytest.mark.parametrize("capability, policy", [((9, 0), "mixed_bfloat16"), ((8, 6), "mixed_bfloat16"),
                                                ((7, 5), "mixed_float16"), ((6, 1), "float32"), (None, "float32")])
def test_gpus_choose_by_compute_capability(capability, policy):
    assert precision.gpu_choice(capability).policy == policy


@pytest.fixture(scope="module")
def bfloat16_run(tones, tmp_path_factory):
    """(run directory, results) of a tiny run whose probe (cached) chose bfloat16."""
    cache = tmp_path_factory.mktemp("cache")
    config = training.TrainConfig(dataset="tones", data_dir=str(tones), log_dir=str(cache / "log"),
                                  init_features=8, batch_size=8, num_readers=2, num_stages=1, max_epochs=1,
                                  mixed_precision=True)
    spec = pipeline.spec_of(pipeline.load_manifest(pipeline.dataset_dir(tones, "tones")))
    key = training.probe_key(training.model_config_for(config, spec), spec, config.batch_size)
    (cache / "precision.json").write_text(json.dumps({precision.machine_key(key): 1.5}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMPLECNN_CACHE", str(cache))
        try:
            run_dir, results = training.train(config, verbose=0)
            trained_in = keras.mixed_precision.global_policy().name
        finally:
            precision.set_policy(precision.FLOAT32)
    return run_dir, results, trained_in


def test_a_run_trains_in_the_chosen_precision_and_records_it(bfloat16_run):
    run_dir, _, trained_in = bfloat16_run
    assert trained_in == "mixed_bfloat16"
    stored = json.loads((run_dir / "config.json").read_text())["precision"]
    assert stored["policy"] == "mixed_bfloat16" and "1.50x" in stored["reason"]
    saved = keras.models.load_model(run_dir / json.loads((run_dir / "results.json").read_text())["checkpoint"])
    assert saved.get_layer("conv0_conv").dtype_policy.name == "mixed_bfloat16"


def test_a_bfloat16_run_predicts_in_float32_as_its_results_say(bfloat16_run):
    """Its test scores in results.json are the float32 model's, as evaluate.py computes them."""
    run_dir, results, _ = bfloat16_run
    model, run_config = inference.load_trained(run_dir)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    manifest = training.with_run_statistics(pipeline.run_manifest(run_config), run_config)
    assert training.evaluate(model, manifest) == results["test"]


def test_a_bfloat16_run_exports_to_tflite(bfloat16_run, tmp_path):
    """TFLite has no bfloat16 convolution: the export converts the float32 model."""
    report = export.export_run(bfloat16_run[0], ["tflite"], out_dir=tmp_path, progress=lambda line: None)
    assert (tmp_path / report["formats"]["tflite"]["file"]).is_file()
