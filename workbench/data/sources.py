"""Raw loading: any supported source into a ``datasets.DatasetDict``, without touching images.

Sources: a Hugging Face dataset id, a ``save_to_disk`` folder, an ``imagefolder`` with
``metadata.jsonl``/``metadata.csv``, parquet / CSV / JSON Lines files with image paths, or
a demo data set name (:mod:`workbench.data.demo_sets`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from workbench.data.demo_sets import DEMO_DATASETS, ensure_demo_dataset

_TABULAR = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


class DataError(ValueError):
    """Input data that cannot be used as given; the message names the column or row and the fix."""


def _load_tabular(files: list[Path]):
    import datasets

    kinds = {_TABULAR[f.suffix.lower()] for f in files}
    if len(kinds) != 1:
        raise DataError(f"mixed file types {sorted(kinds)} in {files[0].parent}; keep one format per folder")
    by_split: dict[str, list[str]] = {}
    for f in files:
        split = next((s for s in ("train", "validation", "valid", "val", "test") if f.stem.startswith(s)), "train")
        split = {"valid": "validation", "val": "validation"}.get(split, split)
        by_split.setdefault(split, []).append(str(f))
    for split, paths in by_split.items():
        for f in paths:
            if _count_rows(Path(f)) == 0:
                raise DataError(f"{f}: split {split!r} is empty (no data rows); add rows or remove the file")
    try:
        dd = datasets.load_dataset(kinds.pop(), data_files=by_split)
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, UnicodeDecodeError) or "codec can't decode" in str(cause):
            for f in files:
                where = _first_non_utf8(f)
                if where:
                    raise DataError(f"{f}: {where} is not UTF-8 text; re-save the file as UTF-8") from err
        raise DataError(f"cannot read {', '.join(map(str, files))}: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}") from err
    # Relative image paths are relative to the table file, as a user writes them.
    base = {split: Path(paths[0]).parent for split, paths in by_split.items()}
    return dd, base


def _first_non_utf8(path: Path) -> str | None:
    """'row R (line L), column C' of the first bytes that are not UTF-8, or None when all decode."""
    header: list[str] | None = None
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if path.suffix.lower() != ".csv" or header is None:
                    return f"line {line_no}"
                cells = next(csv.reader([raw.decode("latin-1")]), [])
                column = next((header[i] for i, c in enumerate(cells) if i < len(header) and _not_utf8(c)), None)
                where = f"row {line_no - 2} (line {line_no})"
                return f"{where}, column {column!r}" if column else where
            if header is None and path.suffix.lower() == ".csv":
                header = next(csv.reader([text]), [])
    return None


def _not_utf8(cell_as_latin1: str) -> bool:
    try:
        cell_as_latin1.encode("latin-1").decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _count_rows(path: Path) -> int:
    """Data rows in a table file (0 means empty), read from metadata or the first lines only."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        lines = [line for _, line in zip(range(3), f) if line.strip()]
    header = 1 if path.suffix.lower() == ".csv" else 0
    return max(0, len(lines) - header)


_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def is_image_folder(folder: Path) -> bool:
    """A folder with a ``metadata.csv/jsonl/parquet`` is an image folder whatever else sits beside
    it (a stray truth.json or notes.csv is not a table of the data)."""
    names = {f.name.lower() for f in folder.iterdir()}
    return any(m in names for m in _METADATA_FILES)


def _saved_splits(folder: Path) -> dict[str, Path]:
    """Split name -> folder of a save_to_disk folder (one Dataset: {"train": folder})."""
    listing = folder / "dataset_dict.json"
    if listing.exists():
        return {s: folder / s for s in json.loads(listing.read_text()).get("splits", [])}
    return {"train": folder}


def _check_saved_dataset(folder: Path) -> None:
    """A save_to_disk folder whose splits are all empty fails here, naming the folder (datasets
    itself raises IndexError on loading a split saved without any data file)."""
    splits = _saved_splits(folder)
    empty = [s for s, f in splits.items() if (f / "state.json").exists()
             and not json.loads((f / "state.json").read_text()).get("_data_files")]
    if splits and len(empty) == len(splits):
        raise DataError(f"{folder}: the saved data set has no rows in any split ({', '.join(splits)}); "
                        "save it again with its rows (Dataset.save_to_disk)")


def hub_dataset_commit(source: str, revision: str | None = None) -> str | None:
    """The commit a hub dataset id resolved to in the local Hugging Face cache (None for local data or
    when it is not cached): ``refs/<revision>`` of its cache folder, or the revision when it is a commit."""
    if source in DEMO_DATASETS or Path(source).exists() or source.count("/") != 1:
        return None
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{source.replace('/', '--')}" / "refs" / (revision or "main")
    return ref.read_text().strip() if ref.is_file() else None


def load_raw(source: str, *, revision: str | None = None, config_name: str | None = None):
    """Load ``source`` into a ``DatasetDict`` without touching images. Returns (dd, path_base)."""
    import datasets

    if source in DEMO_DATASETS:
        return datasets.load_from_disk(str(ensure_demo_dataset(source))), {}
    p = Path(source)
    if p.is_file():
        if p.suffix.lower() not in _TABULAR:
            raise DataError(f"{p}: unsupported file type; use .parquet, .csv or .jsonl with an image-path column")
        return _load_tabular([p])
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            _check_saved_dataset(p)
            dd = datasets.load_from_disk(str(p))
            if isinstance(dd, datasets.Dataset):
                dd = datasets.DatasetDict({"train": dd})
            return dd, {}
        if is_image_folder(p):
            return datasets.load_dataset("imagefolder", data_dir=str(p)), {}
        tables = sorted(f for f in p.iterdir() if f.suffix.lower() in _TABULAR)
        if tables:
            return _load_tabular(tables)
        if not any(p.iterdir()):
            raise DataError(f"{p}: the folder is empty; put images (with a metadata.csv) or a table of image paths in it")
        return datasets.load_dataset("imagefolder", data_dir=str(p)), {}
    if source.startswith((".", "/")) or os.sep in source.strip("/").split("/", 1)[-1]:
        raise DataError(f"{source}: no such file or folder")
    try:
        return datasets.load_dataset(source, config_name, revision=revision), {}
    except Exception as err:  # datasets raises many types for a missing or offline id
        raise DataError(
            f"cannot load dataset {source!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
            "(pass a hub id reachable from here, a save_to_disk folder, an imagefolder, or parquet/CSV files)"
        ) from err

