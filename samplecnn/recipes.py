"""Recipes: every choice in which a training set-up may differ from the 2019 code, in one place.

A recipe is selected by name with ``--recipe NAME`` (train.py, build_dataset.py) or
``recipe=NAME`` (ModelConfig, TrainConfig, build_model, build_dataset) and is recorded in
config.json and manifest.json. ``2019`` is the code of Kim, Lee & Nam (JSTSP 2019,
github.com/tae-jun/sampleaudio) choice by choice; ``samplecnn`` is this package's default.
New recipes are added with :func:`register_recipe`.

This module imports neither TensorFlow nor Keras: the dataset builder's workers use it.
"""
import dataclasses

ROLES = ("conv0", "conv", "shortcut", "se_reduce", "se_expand", "head", "logits")
"""Kernels a recipe chooses an initializer and weight decay for: the strided first convolution,
the block convolutions, the 1x1 shortcut convolutions, the two squeeze-excitation dense
layers, the head's hidden dense layer and the classifier."""

CONV_ROLES = frozenset({"conv0", "conv", "shortcut"})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The choices of one recipe.

    initializers: role -> name in ``samplecnn.models.initializers.INITIALIZERS``.
    weight_decay_roles: the kernels that get ``--weight-decay`` as L2.
    best_per_stage: True: every stage starts with best val loss = inf, so its first epoch
        always replaces best.h5 and the final model is the best epoch of the last stage;
        False: one best over the whole run.
    shuffle_shards: True: train shards in a new order every pass, read interleaved;
        False: shards read one after another in a fixed order.
    shuffle_segments: the segment shuffle buffer.
    checkpoint_scores: the results keys of the ``final-auc_..-acc_..-f1_..`` name.
    padding: how clips shorter than the clip length are filled (``samplecnn.audio.PADDINGS``).
    validation_steps: a stage is validated every epoch or every this many optimizer steps,
        whichever is longer, so that patience never counts the noise of tiny epochs (0: every epoch).
    min_steps: patience cannot end the first stage before this many optimizer steps: a new
        model sits on a plateau at chance before it learns, longer the smaller the set (0: no minimum).
    mixed_precision: compute in bfloat16 or float16 where that is faster on the device at hand
        (``samplecnn.precision``: a measured probe on a CPU, the compute capability on a GPU);
        False: float32 everywhere.
    """

    name: str
    summary: str
    initializers: dict
    weight_decay_roles: frozenset
    best_per_stage: bool
    shuffle_shards: bool
    shuffle_segments: int
    checkpoint_scores: tuple
    padding: str
    validation_steps: int
    min_steps: int
    mixed_precision: bool

    def __post_init__(self):
        if set(self.initializers) != set(ROLES):
            raise ValueError(f"recipe {self.name!r} must choose an initializer for each of {ROLES}")
        if not set(self.weight_decay_roles) <= set(ROLES):
            raise ValueError(f"recipe {self.name!r}: weight decay roles must be among {ROLES}")


_RECIPES = {}

DEFAULT_RECIPE = "samplecnn"


def register_recipe(recipe):
    """Makes ``recipe`` selectable by its name; returns it."""
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered; choose another name")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes():
    return sorted(_RECIPES)


def get_recipe(name):
    try:
        return _RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; registered recipes: {', '.join(list_recipes())}") from None


OUR_SCORES = ("roc_auc", "accuracy", "f1")
SCORES_2019 = ("roc_auc", "accuracy_2019", "f1_2019")

register_recipe(Recipe(
    name="2019",
    summary="the 2019 code: k*c_in^2 fan-in uniform block convs and glorot elsewhere, best.h5 restarted every "
            "stage, fixed shard order with a 10000-segment buffer, 2019 scores, L2 on convs only, np.repeat padding, "
            "validation and patience every epoch, float32",
    initializers={"conv0": "squared_fan_in_uniform_1", "conv": "squared_fan_in_uniform_2",
                  "shortcut": "glorot_uniform", "se_reduce": "glorot_uniform", "se_expand": "glorot_uniform",
                  "head": "glorot_uniform", "logits": "glorot_uniform"},
    weight_decay_roles=CONV_ROLES,
    best_per_stage=True,
    shuffle_shards=False,
    shuffle_segments=10000,
    checkpoint_scores=SCORES_2019,
    padding="repeat",
    validation_steps=0,
    min_steps=0,
    mixed_precision=False,
))

register_recipe(Recipe(
    name="samplecnn",
    summary="He uniform convs and dense layers, one best checkpoint over all stages, shards reshuffled every pass "
            "with a 2048-segment buffer, top-1 accuracy and macro F1 for single-label sets, L2 on every kernel, "
            "clips looped, validation periods of at least validation_steps, no patience before min_steps, bfloat16 or "
            "float16 where measured faster",
    initializers={"conv0": "fan_in_uniform_1", "conv": "fan_in_uniform_2", "shortcut": "fan_in_uniform_2",
                  "se_reduce": "fan_in_uniform_2", "se_expand": "fan_in_uniform_1", "head": "fan_in_uniform_2",
                  "logits": "glorot_uniform"},
    weight_decay_roles=frozenset(ROLES),
    best_per_stage=False,
    shuffle_shards=True,
    shuffle_segments=2048,
    checkpoint_scores=OUR_SCORES,
    padding="loop",
    validation_steps=150,
    min_steps=1500,
    mixed_precision=True,
))
