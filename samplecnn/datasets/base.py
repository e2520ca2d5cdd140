"""DatasetSpec: the fixed facts of a data set (audio format, segmentation, task, classes)."""
import dataclasses

MULTILABEL = "multilabel"
MULTICLASS = "multiclass"

_SPECS = {}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Facts about a data set that models, builders and evaluation all share.

    ``threshold`` is the decision threshold of a multi-label task; multi-class tasks
    decide by argmax and have ``threshold=None``.
    """

    name: str
    sample_rate: int
    clip_seconds: float
    segment_samples: int
    segments_per_clip: int
    num_blocks: int
    classes: tuple
    task: str
    threshold: float | None
    clips_per_shard: int

    def __post_init__(self):
        if self.task not in (MULTILABEL, MULTICLASS):
            raise ValueError(f"task must be {MULTILABEL!r} or {MULTICLASS!r}, got {self.task!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"{self.name}: class names must be unique")
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def activation(self):
        """Output activation: sigmoid for multi-label, softmax for multi-class."""
        return "sigmoid" if self.task == MULTILABEL else "softmax"

    @property
    def clip_samples(self):
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["classes"] = list(self.classes)
        return values

    @classmethod
    def from_dict(cls, values):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


def register_spec(spec):
    """Makes ``spec`` available to ``get_spec(spec.name)``; returns it."""
    _SPECS[spec.name] = spec
    return spec


def get_spec(name):
    """The spec of a built-in data set (mtt, scd, dcs)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"Unknown data set {name!r}; built-in data sets: {', '.join(list_specs())}") from None


def list_specs():
    return sorted(_SPECS)


class LayoutError(Exception):
    """The raw download is missing or not in the expected layout."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One row of a clip table: a file, its class names and its split."""

    clip_id: str
    path: str
    labels: tuple
    split: str


@dataclasses.dataclass
class DatasetIndex:
    """What an indexer finds in a raw layout.

    A fold set's clips have the split ``fold_split(k)`` of their fold. ``failures`` are
    clips listed by the annotations but unusable before decoding (e.g. audio missing);
    ``notes`` are facts worth reporting (e.g. a class list that differs from the spec's).
    """

    spec: DatasetSpec
    clips: list
    failures: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    folds: list = dataclasses.field(default_factory=list)
    """Names of the folds of a fold set (empty for a set with train, val and test splits)."""

    @property
    def splits(self):
        return split_names(self.folds)


SPLITS = ("train", "val", "test")
FOLD_PREFIX = "fold"


def fold_split(k):
    """The split name of fold ``k`` (0-based): its shards are ``fold<k>-*.tfrecord``."""
    return f"{FOLD_PREFIX}{k}"


def split_names(folds):
    """The splits of a data set: one per fold of a fold set, else train, val and test."""
    return tuple(fold_split(k) for k in range(len(folds))) if folds else SPLITS

_INDEXERS = {}


def register_indexer(name):
    """Decorator registering ``fn(raw_dir) -> DatasetIndex`` for ``build_dataset.py name``."""

    def decorator(fn):
        _INDEXERS[name] = fn
        return fn

    return decorator


def get_indexer(name):
    try:
        return _INDEXERS[name]
    except KeyError:
        raise ValueError(f"No raw-layout indexer for {name!r}; known: {', '.join(sorted(_INDEXERS))}") from None


def require(path, what, dataset):
    """Raises LayoutError naming ``path`` unless it exists."""
    if not path.exists():
        raise LayoutError(
            f"{what} not found: expected {path}. Download and unpack the {dataset} data set as the "
            f"README's 'Building data sets' section shows (the raw files go in {path.parent})."
        )
    return path
