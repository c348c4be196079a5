"""Data sets: readers for the original file formats, a registry and ``load_dataset``."""
from . import download, readers
from .base import (
    DATASETS,
    DatasetSpec,
    ImageDataset,
    RemoteFile,
    Split,
    default_root,
    list_datasets,
    register_dataset,
    require_dataset,
)
from .datasets import channel_stats, load_dataset

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "RemoteFile",
    "Split",
    "channel_stats",
    "default_root",
    "download",
    "list_datasets",
    "load_dataset",
    "readers",
    "register_dataset",
    "require_dataset",
]
