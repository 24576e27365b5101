"""Data sets for training a classifier: scikit-learn's bundled sets, a user's CSV file, a
stratified train/validation/test split, standardisation and mini-batches.

Only NumPy is needed at import time; scikit-learn is imported by the functions that use it.
"""

from handgrad.data.loading import DATASETS, Dataset, load_csv, load_dataset, load_features
from handgrad.data.preparation import Split, Standardiser, batches, split

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "Standardiser",
    "batches",
    "load_csv",
    "load_dataset",
    "load_features",
    "split",
]
