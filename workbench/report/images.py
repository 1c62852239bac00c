"""Thumbnails of audited images, taken by row index from the dataset the audit read."""

from __future__ import annotations

from typing import Any

from workbench.data import ColumnMap, decode_image, load_splits


class ImageLoadError(RuntimeError):
    """The audit's dataset cannot be opened here (moved, offline, or not recorded)."""


def load_rows(source: str, split: str, rows: list[int], *, columns: dict[str, Any] | None = None,
              size: int = 112) -> dict[int, Any]:
    """PIL thumbnails (at most ``size`` px a side) of ``rows`` of ``split`` of ``source``.

    ``source``/``split`` are the ``data`` entry of the audit summary; ``columns`` its column map
    when the audit recorded one. Rows outside the split are left out.
    """
    if not source or not split:
        raise ImageLoadError("the audit summary does not say which dataset and split it read")
    # Only the image column is read: a caption or label column the audit did not need may be absent.
    image_column = str((columns or {}).get("image") or "image")
    column_map = ColumnMap(image=image_column, caption=None, label=None, groups=())
    try:
        splits = load_splits(source, column_map, splits=[split])
    except Exception as err:  # a moved folder, an offline hub id, a bad column map: all mean "no images"
        raise ImageLoadError(f"{source} (split {split}): {err}") from err
    if split not in splits:
        raise ImageLoadError(f"{source} has no split {split!r}")
    dataset = splits[split]
    wanted = sorted({int(r) for r in rows if 0 <= int(r) < len(dataset)})
    if not wanted:
        return {}
    subset = dataset.select(wanted).select_columns(["image"])
    out: dict[int, Any] = {}
    for row, item in zip(wanted, subset):
        try:
            image = decode_image(item["image"], draft_size=size * 2)
        except ValueError:
            continue  # an unreadable file: the gallery shows its rank and score without a picture
        image.thumbnail((size, size))
        out[row] = image
    return out
