"""Data: bundled real datasets, user files, seeded stratified splits and k-fold, preprocessing fitted on training data only.

Every file reader is bounded by ``ReaderLimits`` (decompressed bytes, elements, image pixels, CSV fields).
"""
from .dataset import Dataset
from .datasets import DATASETS, load_data, load_dataset
from .files import ImageFolder, read_array, read_csv, read_image_folder, read_numpy
from .limits import DEFAULT_LIMITS, ReaderLimits
from ..processing.preprocess import (
    PREPROCESSORS, LabelMap, MinMaxScale, OneHot, Pipeline, Preprocessor, Rescale, Standardize, make_preprocessing,
    preprocessor_from_dict,
)
from .split import Fold, Splits, kfold_splits, split_dataset, split_sizes
from .targets import dataset_from_arrays

__all__ = [
    "DATASETS", "DEFAULT_LIMITS", "Dataset", "Fold", "ImageFolder", "LabelMap", "MinMaxScale", "OneHot",
    "PREPROCESSORS", "Pipeline", "Preprocessor", "ReaderLimits", "Rescale", "Splits", "Standardize",
    "dataset_from_arrays", "kfold_splits", "load_data", "load_dataset", "make_preprocessing",
    "preprocessor_from_dict", "read_array", "read_csv", "read_image_folder", "read_numpy", "split_dataset",
    "split_sizes",
]
