"""Data sets for training a classifier: scikit-learn's bundled sets, a user's CSV file, a
stratified train/validation/test split, standardisation and mini-batches.

Only NumPy is needed at import time; scikit-learn is imported by the functions that use it.
"""

from handgrad.core.deprecation import renamed
from handgrad.data.loading import DATASETS, Dataset, load_csv, load_dataset, load_features
from handgrad.data.preparation import Split, Standardizer, batches, split

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "Standardizer",
    "batches",
    "load_csv",
    "load_dataset",
    "load_features",
    "split",
]

__getattr__ = renamed(
    "handgrad.data", {"Standardiser": "Standardizer"}, globals()
)  # the names of 0.1
