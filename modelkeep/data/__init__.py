"""Data: bundled real datasets, user files, seeded stratified splits and k-fold, preprocessing fitted on training data only."""
from .dataset import Dataset
from .datasets import DATASETS, load_data, load_dataset
from .files import ImageFolder, read_csv, read_image_folder, read_numpy
from .preprocess import (
    PREPROCESSORS, LabelMap, MinMaxScale, OneHot, Pipeline, Preprocessor, Rescale, Standardize, make_preprocessing,
    preprocessor_from_dict,
)
from .split import Fold, Splits, kfold_splits, split_dataset

__all__ = [
    "DATASETS", "Dataset", "Fold", "ImageFolder", "LabelMap", "MinMaxScale", "OneHot", "PREPROCESSORS", "Pipeline",
    "Preprocessor", "Rescale", "Splits", "Standardize", "kfold_splits", "load_data", "load_dataset",
    "make_preprocessing", "preprocessor_from_dict", "read_csv", "read_image_folder", "read_numpy", "split_dataset",
]
