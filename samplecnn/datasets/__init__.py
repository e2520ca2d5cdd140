"""Data set specs and the raw-layout indexers of MagnaTagATune, Speech Commands and DCASE."""
from samplecnn.datasets import custom, dcs, mtt, scd  # noqa: F401  (registers the built-in data sets)
from samplecnn.datasets.base import (MULTICLASS, MULTILABEL, Clip, DatasetIndex, DatasetSpec, LayoutError, get_spec,
                                     list_specs, register_spec)

__all__ = ["MULTICLASS", "MULTILABEL", "Clip", "DatasetIndex", "DatasetSpec", "LayoutError", "get_spec", "list_specs",
           "register_spec"]
