"""The canonical example shape, and the flags that say which source columns fill it.

Every split comes out of :func:`load_splits` with the columns ``row`` (index in the source
split), ``image`` (undecoded: bytes or path), ``caption``, ``label`` and the group columns,
so the trainer and the audit never care where data came from. Validation happens here,
before any compute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.holdout import ValidationHoldout, holdout_rows
from workbench.data.sources import DataError, load_raw

MISSING_GROUP = "(missing)"


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the image, caption, class label and sensitive groups."""

    image: str = "image"
    caption: str | None = "caption"
    label: str | None = "label"
    groups: tuple[str, ...] = ()

    @classmethod
    def demo(cls) -> "ColumnMap":
        return cls(groups=("skin_tone", "sex"))


@dataclass
class DataArguments:
    """The data flags shared by every recipe and ``python -m workbench.audit`` (declared once here).

    Parsed with ``transformers.HfArgumentParser``; each field's help is the flag's help text.
    """

    dataset: str = field(
        default="",
        metadata={"help": "hub dataset id, save_to_disk folder, image folder, parquet/CSV/JSONL file or folder, "
                          "or workbench/demo-derm", "aliases": ["--data"]},
    )
    data_config: str | None = field(
        default=None, metadata={"help": "dataset configuration name (hub datasets with several, e.g. FairFace '1.25')"}
    )
    data_revision: str | None = field(default=None, metadata={"help": "dataset revision (branch, tag or commit) on the hub"})
    image_column: str = field(default="image", metadata={"help": "column holding images or image paths"})
    caption_column: str | None = field(
        default="caption",
        metadata={"help": "column holding captions; empty: captions are built from the label and the first template"},
    )
    label_column: str | None = field(
        default="label", metadata={"help": "column holding the class name (zero-shot accuracy); empty: none"}
    )
    group_columns: list[str] = field(
        default_factory=list, metadata={"help": "sensitive-attribute columns, e.g. skin_tone sex"}
    )

    def __post_init__(self) -> None:
        # `--group-columns ''` means none: an empty name is never a column.
        self.group_columns = [c for c in (self.group_columns or []) if c]

    def column_map(self) -> ColumnMap:
        """The columns as :class:`ColumnMap` (empty strings mean: no such column)."""
        return ColumnMap(
            image=self.image_column,
            caption=self.caption_column or None,
            label=self.label_column or None,
            groups=tuple(c for c in self.group_columns if c),
        )



def _label_names(feature) -> list[str] | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return None


def _check_columns(split: str, names: Sequence[str], columns: ColumnMap) -> None:
    wanted = [("--image-column", columns.image), ("--caption-column", columns.caption), ("--label-column", columns.label)]
    wanted += [("--group-columns", g) for g in columns.groups]
    for flag, col in wanted:
        if col is not None and col not in names:
            raise DataError(
                f"split {split!r} has no column {col!r}; available columns: {', '.join(names)} (set {flag})"
            )


def load_splits(
    source: str,
    columns: ColumnMap,
    *,
    splits: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    revision: str | None = None,
    config_name: str | None = None,
    holdout: ValidationHoldout | None = None,
):
    """Load ``source`` and return a ``DatasetDict`` of the requested splits in canonical shape.

    Validation happens here, before any compute: missing columns, empty splits, labels
    outside ``class_names`` and all-null group columns raise :class:`DataError`.
    ``holdout``: when the source has no split ``holdout.name``, carve it out of
    ``holdout.source_split`` (stratified, seeded); that split then loses those rows. The
    ``row`` column keeps each row's index in the source split; :func:`holdout_of` tells a
    carved split (and the split it came from) apart.
    """
    import datasets

    dd, path_base = load_raw(source, revision=revision, config_name=config_name)
    source_rows: dict[str, list[int]] = {}
    carve = None
    if holdout is not None and holdout.name not in dd and holdout.source_split in dd:
        dd, source_rows, carve = _carve(dd, holdout, source)
        path_base = {**path_base, holdout.name: path_base.get(holdout.source_split)}
    available = list(dd.keys())
    wanted = list(splits) if splits else available
    out = {}
    for split in wanted:
        if split not in dd:
            raise DataError(f"{source}: no split {split!r}; available splits: {', '.join(available)}")
        ds = dd[split]
        if len(ds) == 0:
            raise DataError(f"{source}: split {split!r} is empty; point at a split with rows")
        _check_columns(split, ds.column_names, columns)
        out[split] = _canonical(ds, split, columns, class_names, path_base.get(split), source,
                                source_rows=source_rows.get(split), holdout=carve if split in source_rows else None)
    return datasets.DatasetDict(out)


def _carve(dd, holdout: ValidationHoldout, source: str):
    """(DatasetDict with the carved split added, source row indices per changed split, description)."""
    import datasets

    base = dd[holdout.source_split]
    missing = [c for c in holdout.strata if c not in base.column_names]
    if missing:
        raise DataError(f"split {holdout.source_split!r} has no column {missing[0]!r}; available columns: "
                        f"{', '.join(base.column_names)} (set --label-column / --group-columns)")
    values = list(zip(*(column_values(base, c) for c in holdout.strata))) if holdout.strata else [()] * len(base)
    held = holdout_rows(values, holdout.fraction, holdout.seed)
    if len(held) == 0 or len(held) == len(base):
        raise DataError(
            f"{source}: split {holdout.source_split!r} has {len(base)} rows, too few to hold out "
            f"{holdout.fraction:g} of each label x group cell as {holdout.name!r}; add a {holdout.name!r} split to the data "
            f"or raise --validation-fraction"
        )
    held_set = set(held.tolist())
    kept = [i for i in range(len(base)) if i not in held_set]
    out = datasets.DatasetDict({**dd, holdout.source_split: base.select(kept), holdout.name: base.select(held.tolist())})
    carve = holdout.describe(len(held), len(kept))
    return out, {holdout.source_split: kept, holdout.name: held.tolist()}, carve


def holdout_of(split) -> dict | None:
    """The carve description of a split :func:`load_splits` carved (or shrank), else None."""
    desc = getattr(split.info, "description", "") or "" if split is not None else ""
    if desc.startswith("{"):
        try:
            return json.loads(desc).get("holdout")
        except ValueError:
            return None
    return None


def _canonical(ds, split: str, columns: ColumnMap, class_names, path_base: Path | None, source: str, *,
               source_rows: list[int] | None = None, holdout: dict | None = None):
    import datasets

    label_names = _label_names(ds.features[columns.label]) if columns.label else None
    keep = [c for c in (columns.image, columns.caption, columns.label, *columns.groups) if c]
    ds = ds.select_columns(list(dict.fromkeys(keep)))
    # Undecoded images: decode_image handles bad files; datasets would raise mid-epoch.
    img_feature = ds.features[columns.image]
    if isinstance(img_feature, datasets.Image):
        ds = ds.cast_column(columns.image, datasets.Image(decode=False))
    elif not (isinstance(img_feature, datasets.Value) and img_feature.dtype in ("string", "large_string")):
        raise DataError(
            f"{source} split {split!r}: column {columns.image!r} holds {img_feature}, not images or image paths "
            "(set --image-column)"
        )

    records = {"row": list(source_rows) if source_rows is not None else list(range(len(ds)))}
    image_part = None
    if isinstance(img_feature, datasets.Value):
        base = path_base or Path(".")
        paths = [None if p is None else str(p if Path(p).is_absolute() else base / p) for p in column_values(ds, columns.image)]
        records["image"] = [{"bytes": None, "path": p} for p in paths]
        image_keys = [f"path:{p}" for p in paths]
    else:
        # Image bytes stay in the Arrow table (memory-mapped for on-disk data sets), never in Python lists.
        image_part = ds.select_columns([columns.image])
        if columns.image != "image":
            image_part = image_part.rename_column(columns.image, "image")
        image_keys = _image_keys(image_part)
    _report_duplicates(image_keys, ds, columns, source, split)
    if columns.caption:
        records["caption"] = ["" if c is None else str(c) for c in column_values(ds, columns.caption)]
    if columns.label:
        labels = column_values(ds, columns.label)
        if label_names is not None:
            labels = [None if v is None else label_names[v] for v in labels]
        labels = [None if v is None else str(v) for v in labels]
        for i, v in enumerate(labels):
            if v is None:
                raise DataError(f"{source} split {split!r} row {i}: column {columns.label!r} is empty; fill or drop the row")
            if class_names is not None and v not in class_names:
                raise DataError(
                    f"{source} split {split!r} row {i}: label {v!r} in column {columns.label!r} is not one of "
                    f"the classes {list(class_names)}; fix the row or the class list"
                )
        records["label"] = labels
    for g in columns.groups:
        values = column_values(ds, g)
        group_names = _label_names(ds.features[g])
        if group_names is not None:
            # Integer codes differ between dataset releases: groups are always carried by name.
            values = [None if v is None else group_names[v] for v in values]
        if all(v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in values):
            raise DataError(
                f"{source} split {split!r}: group column {g!r} is empty in every row; fill it or drop it from --group-columns"
            )
        records[g] = [MISSING_GROUP if v is None or v == "" or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
    feats = {"row": datasets.Value("int64")}
    if image_part is None:
        feats["image"] = datasets.Image(decode=False)
    for k in records:
        if k not in feats:
            feats[k] = datasets.Value("string")
    out = datasets.Dataset.from_dict(records, features=datasets.Features(feats))
    if image_part is not None:
        out = datasets.concatenate_datasets([out, image_part.flatten_indices()], axis=1)
        out = out.select_columns(["row", "image", *[c for c in records if c != "row"]])
    described = {**({"class_names": label_names} if label_names is not None else {}),
                 **({"holdout": holdout} if holdout is not None else {})}
    if described:
        out.info.description = json.dumps(described)
    return out


def _image_keys(image_part) -> list[str]:
    """A content hash per row of an undecoded image column, read in Arrow batches (bytes never listed)."""
    keys: list[str] = []
    for batch in image_part.with_format("arrow").iter(batch_size=2048):
        column = batch.column("image")
        data, paths = column.combine_chunks().field("bytes"), column.combine_chunks().field("path")
        for i in range(len(column)):
            buf = data[i].as_buffer() if data[i].is_valid else None
            keys.append(hashlib.sha1(buf).hexdigest() if buf is not None and buf.size else f"path:{paths[i].as_py()}")
    return keys


def duplicate_rows(image_keys: Sequence[str], *other_columns: Sequence) -> list[tuple[int, int]]:
    """(row, earlier row it repeats) for rows whose image key and every other given column are equal."""
    seen: dict[tuple, int] = {}
    dupes = []
    for i, ident in enumerate(image_keys):
        key = (ident, *(col[i] for col in other_columns))
        if key in seen:
            dupes.append((i, seen[key]))
        else:
            seen[key] = i
    return dupes


def column_values(ds, name: str) -> list:
    """All values of one column as a list, read in one Arrow pass.

    In datasets 5 ``ds[name]`` is a lazy column: iterating it formats one row at a time
    (about 20 us a row) and indexing it re-reads the table; ``[:]`` converts it at once
    (and is a plain copy where ``ds[name]`` is already a list).
    """
    return ds[name][:]


def _report_duplicates(image_keys: list[str], ds, columns: ColumnMap, source: str, split: str) -> None:
    # Duplicates are kept (a data set may repeat an image on purpose) but never silently.
    others = [column_values(ds, c) for c in dict.fromkeys(c for c in (columns.caption, columns.label, *columns.groups) if c)]
    dupes = duplicate_rows(image_keys, *others)
    if dupes:
        row, first = dupes[0]
        print(
            f"note: {source} split {split!r} has {len(dupes)} duplicate row(s) (same image and columns; first: "
            f"row {row} repeats row {first}); they are kept, drop them upstream if they are not intended"
        )


def class_names_of(dataset) -> list[str]:
    """Class names in a stable order: the source's ClassLabel order, else first appearance sorted."""
    desc = getattr(dataset.info, "description", "") or ""
    if desc.startswith("{"):
        try:
            return list(json.loads(desc)["class_names"])
        except (ValueError, KeyError):
            pass
    return sorted(set(column_values(dataset, "label")))


def dataset_fingerprint(dataset) -> str:
    """Identity of a split's content: the ``datasets`` fingerprint plus its length and columns."""
    h = hashlib.sha256()
    h.update(str(getattr(dataset, "_fingerprint", "")).encode())
    h.update(str(len(dataset)).encode())
    h.update(",".join(dataset.column_names).encode())
    return h.hexdigest()[:16]

