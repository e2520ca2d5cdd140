"""Data set specs and the raw-layout indexers of MagnaTagATune, Speech Commands and DCASE."""
from samplecnn.datasets import dcs, mtt, scd  # noqa: F401  (registers the built-in specs)
from samplecnn.datasets.base import MULTICLASS, MULTILABEL, DatasetSpec, get_spec, list_specs, register_spec

__all__ = ["MULTICLASS", "MULTILABEL", "DatasetSpec", "get_spec", "list_specs", "register_spec"]
