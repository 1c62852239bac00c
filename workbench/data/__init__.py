"""Loading image-text data from any supported source into one example shape, with validation.

The package in the order data flows through it:

- :mod:`~workbench.data.demo_sets`: the demo data set names, built once into the data home;
- :mod:`~workbench.data.sources`: raw loading of a hub id, ``save_to_disk`` folder,
  ``imagefolder``, parquet / CSV / JSON Lines files with image paths, or a demo name;
- :mod:`~workbench.data.canonical`: the column flags (:class:`ColumnMap`,
  :class:`DataArguments`) and the canonical split shape every consumer reads;
- :mod:`~workbench.data.holdout`: a stratified, seeded validation split carved from train;
- :mod:`~workbench.data.images`: safe decoding and the once-per-split uint8 pixels;
- :mod:`~workbench.data.text`: caption token ids.

Everything public is re-exported here, so ``from workbench.data import load_splits`` is
the way to use it.
"""

from workbench.data.canonical import (
    MISSING_GROUP,
    ColumnMap,
    DataArguments,
    class_names_of,
    column_values,
    dataset_fingerprint,
    duplicate_rows,
    holdout_of,
    load_splits,
)
from workbench.data.demo_sets import DEMO_DATASET, DEMO_DATASETS, DEMO_SHAPES, demo_dataset_dir, ensure_demo_dataset
from workbench.data.images import (
    MAX_IMAGE_PIXELS,
    PixelSet,
    decode_image,
    normalize_pixels,
    pixel_settings_key,
    pixels_for,
    preprocess_uint8,
    to_rgb,
)
from workbench.data.holdout import ValidationHoldout, holdout_rows
from workbench.data.sources import DataError, hub_dataset_commit, is_image_folder, load_raw
from workbench.data.text import pad_token_ids, tokenize_captions

__all__ = [
    "DEMO_DATASET",
    "DEMO_DATASETS",
    "DEMO_SHAPES",
    "MAX_IMAGE_PIXELS",
    "MISSING_GROUP",
    "ColumnMap",
    "DataArguments",
    "DataError",
    "PixelSet",
    "ValidationHoldout",
    "class_names_of",
    "column_values",
    "dataset_fingerprint",
    "decode_image",
    "demo_dataset_dir",
    "duplicate_rows",
    "ensure_demo_dataset",
    "holdout_of",
    "hub_dataset_commit",
    "holdout_rows",
    "is_image_folder",
    "load_raw",
    "load_splits",
    "normalize_pixels",
    "pad_token_ids",
    "pixel_settings_key",
    "pixels_for",
    "preprocess_uint8",
    "to_rgb",
    "tokenize_captions",
]
