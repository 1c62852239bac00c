"""Running an audit end to end: load models and data, embed once, compute, write.

``run_audit`` is what the CLI (``python -m workbench.audit``) and the recipes call; the
dashboard only reads what it writes. Its pieces are public so a benchmark can time them
separately: :func:`load_audit_data`, :func:`embed_for_audit` (images once per model,
cached on disk by model and data fingerprint; sharded under ``accelerate launch``),
:func:`compute_audit` (numbers only) and :func:`write_audit`.

Slightly over 400 lines: the data checks that must run before any model loads
(:func:`check_audit_fits_data`) sit with the loading they guard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch

from workbench import schema
from workbench.audit.core import (
    AuditResult,
    ModelEmbeddings,
    compute_audit,
    group_prompts_needed,
    prompts_needed,
    resolve_candidate,
)
from workbench.audit.families.retrieval import CAPTION_COLUMN
from workbench.audit.spec import AuditSpec, load_audit_spec
from workbench.data import (
    ColumnMap,
    DataArguments,
    DataError,
    ValidationHoldout,
    class_names_of,
    column_values,
    dataset_fingerprint,
    load_raw,
    load_splits,
    pixel_settings_key,
    pixels_for,
)
from workbench.embed import EmbeddingCache, encode_images, encode_texts
from workbench.io import atomic_dir, atomic_write_json
from workbench.models import is_run_folder, load_clip, model_fingerprint
from workbench.paths import embedding_cache_dir


@dataclass
class AuditData:
    """The audited split: a dataset with an ``image`` column and the table of labels and groups."""

    dataset: Any  # datasets.Dataset in canonical shape
    table: pd.DataFrame  # row, [label], group columns
    class_labels: list[str]
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    """Where image embeddings are cached unless told otherwise (shared with the dashboard)."""
    return embedding_cache_dir()


def resolve_model_roles(model: str | os.PathLike | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Role -> {"model": reference, "revision": ...}. A run folder gives "base" and "tuned"; a mapping's
    values are references, or {"model": reference, "revision": ...} for a hub model pinned to a revision."""
    if isinstance(model, Mapping):
        return {role: {"model": str(ref["model"]), "revision": ref.get("revision")} if isinstance(ref, Mapping)
                else {"model": str(ref), "revision": None} for role, ref in model.items()}
    ref = str(model)
    if is_run_folder(ref):
        run = Path(ref)
        base_file = run / schema.RUN_BASE_FILE
        if not base_file.is_file():
            raise FileNotFoundError(
                f"{run} is a run folder without {schema.RUN_BASE_FILE}; pass the tuned model folder "
                f"{run / schema.RUN_MODEL_DIR} to audit it alone"
            )
        base = json.loads(base_file.read_text())
        if "model" not in base:
            raise ValueError(f"{base_file}: no 'model' key; expected {{\"model\": <id or folder>, \"revision\": ...}}")
        return {
            # The resolved hub commit, when the run recorded one, so the audit reads the exact snapshot trained from.
            "base": {"model": str(base["model"]), "revision": base.get("commit") or base.get("revision")},
            "tuned": {"model": str(run / schema.RUN_MODEL_DIR), "revision": None},
        }
    return {"model": {"model": ref, "revision": None}}


def default_output(model: str | os.PathLike | Mapping[str, str], audit_name: str) -> Path | None:
    """``<run>/audit/<audit name>`` for a run folder, else None (an output folder must be given)."""
    if not isinstance(model, Mapping) and is_run_folder(str(model)):
        return Path(model) / schema.RUN_AUDIT_DIR / audit_name
    return None


def audited_data(data: DataArguments, split: str, validation_fraction: float | None, split_seed: int,
                 spec: AuditSpec) -> tuple:
    """(what run_audit reads, its column names, its row count), checked against the audit before any model loads.

    A split the recipes held out of train (``--validation-fraction``) is carved the same way
    and handed over as a canonical dataset; any other is read by name from the source.
    """
    raw, _ = load_raw(data.dataset, revision=data.data_revision, config_name=data.data_config)
    if split in raw or validation_fraction is None:
        if split not in raw:
            raise DataError(f"{data.dataset}: no split {split!r}; available splits: {', '.join(raw)} (set --split, or "
                            "--validation-fraction to hold it out of train as the recipe did)")
        names, n = raw[split].column_names, len(raw[split])
        check_audit_fits_data(spec, names, n, group_columns=data.group_columns, split=split, source=data.dataset)
        return data.dataset, names, n
    names = raw["train"].column_names if "train" in raw else []
    check_audit_fits_data(spec, names, len(raw["train"]) if names else 0, group_columns=data.group_columns, split="train",
                          source=data.dataset)
    groups = tuple(dict.fromkeys([*spec.group_columns, *data.group_columns]))
    holdout = ValidationHoldout(name=split, source_split="train", fraction=validation_fraction, seed=split_seed,
                                strata=tuple(c for c in (data.label_column, *data.group_columns) if c))
    columns = ColumnMap(image=data.image_column, caption=data.caption_column if data.caption_column in names else None,
                        label=data.label_column, groups=groups)
    ds = load_splits(data.dataset, columns, splits=[split], revision=data.data_revision, config_name=data.data_config,
                     holdout=holdout)[split]
    check_audit_fits_data(spec, ds.column_names, len(ds), split=split, source=data.dataset)
    return ds, ds.column_names, len(ds)


def load_audit_data(
    data: str | Any,
    spec: AuditSpec,
    *,
    split: str = "test",
    image_column: str = "image",
    label_column: str | None = "label",
    group_columns: Sequence[str] | None = None,
    revision: str | None = None,
    config_name: str | None = None,
    caption_column: str | None = "caption",
) -> AuditData:
    """Load the split to audit: the audit's attribute columns plus any ``group_columns`` named.

    A group, label or caption column that the data lacks is reported, not fatal: the audit
    then computes what it can and marks the rest as not computed. Captions (for caption
    retrieval) go into the table only, read straight from the source split: the audited
    dataset and its fingerprint stay as they were, so cached image embeddings are reused.
    """
    # The audit's attributes are always read; --group-columns adds columns, it never drops one.
    wanted_groups = list(dict.fromkeys([*spec.group_columns, *(group_columns or [])]))
    warnings: list[str] = []
    if isinstance(data, datasets.Dataset):
        ds = data
        source = f"<in-memory dataset {dataset_fingerprint(ds)}>"
        if image_column not in ds.column_names:
            raise DataError(f"{source}: no column {image_column!r}; columns: {', '.join(ds.column_names)} (set --image-column)")
        if image_column != "image":
            ds = ds.rename_column(image_column, "image")
        if label_column and label_column != "label" and label_column in ds.column_names:
            ds = ds.rename_column(label_column, "label")
        names = ds.column_names
        label_present = "label" in names if label_column else False
        caption_source = ds
    else:
        source = str(data)
        raw, _ = load_raw(source, revision=revision, config_name=config_name)
        if split not in raw:
            raise DataError(f"{source}: no split {split!r}; available splits: {', '.join(raw.keys())} (set --split)")
        names = raw[split].column_names
        caption_source = raw[split]  # canonical rows keep the source order (row = index)
        label_present = bool(label_column) and label_column in names
        present_groups = [g for g in wanted_groups if g in names]
        columns = ColumnMap(image=image_column, caption=None, label=label_column if label_present else None,
                            groups=tuple(present_groups))
        ds = load_splits(source, columns, splits=[split], revision=revision, config_name=config_name)[split]
    missing = [g for g in wanted_groups if g not in names]
    if missing:
        warnings.append(f"group column(s) {missing} not in the data (columns: {', '.join(names)}); pass --group-columns")
    if label_column and not label_present:
        warnings.append(f"label column {label_column!r} not in the data; zero-shot accuracy is not computed (pass --label-column)")
    table = pd.DataFrame({"row": column_values(ds, "row") if "row" in ds.column_names else np.arange(len(ds))})
    if label_present:
        table["label"] = [str(x) for x in column_values(ds, "label")]
    for g in wanted_groups:
        if g in ds.column_names:
            table[g] = [str(x) for x in column_values(ds, g)]
    # Without the caption column the retrieval family reports itself not computed (no warning:
    # most classification data sets have no captions).
    if caption_column and caption_column in names:
        table[CAPTION_COLUMN] = ["" if c is None else str(c) for c in column_values(caption_source, caption_column)]
    class_labels = class_names_of(ds) if label_present else []
    info = {"source": source, "split": split, "fingerprint": dataset_fingerprint(ds), "n": len(ds),
            # The columns as the user named them, so the audit can be reopened on the same data (live views).
            "columns": {"image": image_column, "label": label_column if label_present else None,
                        "caption": caption_column if CAPTION_COLUMN in table.columns else None,
                        "groups": [g for g in wanted_groups if g in table.columns]}}
    return AuditData(ds, table, class_labels, info, warnings)


def check_audit_fits_data(
    spec: AuditSpec,
    column_names: Sequence[str],
    n_rows: int,
    *,
    group_columns: Sequence[str] = (),
    split: str,
    source: str,
) -> None:
    """Stop before any model loads when the audit cannot be answered on this split.

    Raises :class:`DataError` naming the first problem and its fix: an attribute column of the
    audit (or a ``--group-columns`` name) that the split lacks, or a top-k size of the skew
    section or of a check that is not below the number of rows (at k = n a ranking only
    reflects the data's make-up, so every skew check would be inconclusive).
    """
    for column in spec.group_columns:
        if column not in column_names:
            raise DataError(
                f"audit {spec.name!r} ({spec.source}) has attribute {column!r}, which split {split!r} of {source} lacks "
                f"(columns: {', '.join(column_names)}); use an audit for this data "
                "(python -m workbench.audit init --data ... --group-columns ...) or add the column"
            )
    for column in group_columns:
        if column not in column_names:
            raise DataError(
                f"--group-columns {column!r} is not a column of split {split!r} of {source} "
                f"(columns: {', '.join(column_names)}); fix the name or drop it"
            )
    ks = sorted({*(spec.skew.k if spec.skew else ()), *(c.k for c in spec.policy.checks if c.k is not None)})
    too_big = [k for k in ks if k >= n_rows]
    if too_big:
        smaller = sorted({max(2, n_rows // 10), max(2, n_rows // 4)})
        raise DataError(
            f"audit {spec.name!r} ({spec.source}) ranks the top k={too_big[0]} images, but split {split!r} of {source} has "
            f"n={n_rows} rows; k must be well below n: set skew.k (and the checks' k) to e.g. {smaller}"
        )


def _embedding_settings_key(image_processor) -> str:
    """Hash of every image-processor setting (normalisation too): what an image embedding depends on
    besides the weights and the data. Decoded pixels depend on less: see ``pixel_settings_key``."""
    d = image_processor.to_dict()
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def embedding_data_key(dataset, image_processor) -> str:
    """The data half of an image-embedding cache key: the split's fingerprint and the processor settings.

    The model half is the weights' fingerprint; the dashboard's live views look embeddings up by both.
    """
    return f"{dataset_fingerprint(dataset)}-{_embedding_settings_key(image_processor)}"


def embed_for_audit(
    model,
    processor,
    data: AuditData,
    prompts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    accelerator=None,
    pixel_cache: dict[str, Any] | None = None,
    progress: bool = True,
    model_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[tuple[int, str]]]:
    """Image embeddings of every row (from the cache when present) and the prompts' embeddings.

    Returns (image (N, D), text (T, D), valid (N,) bool, bad rows). With an accelerator of
    several processes each embeds its shard and all receive the gathered result. Text is
    encoded on the main process only (``text`` is None elsewhere). ``pixel_cache`` (a dict)
    keeps decoded pixels per image-processor setting, so base and tuned decode once.
    ``model_key``: the model's :func:`~workbench.models.model_fingerprint` when the caller
    already has it (hashing the weights of a large model takes seconds).
    """
    ip = processor.image_processor
    is_main = accelerator is None or accelerator.is_main_process
    model_key = model_fingerprint(model) if model_key is None else model_key
    data_key = embedding_data_key(data.dataset, ip)
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    bad_file = Path(cache_dir) / f"bad-rows-{data_key}.json" if cache_dir is not None else None
    image = cache.get(model_key, data_key) if cache is not None else None
    n = len(data.dataset)
    if image is not None and bad_file is not None and bad_file.is_file():
        bad = [(int(r), str(w)) for r, w in json.loads(bad_file.read_text())["bad_rows"]]
        image = image.numpy()
    else:
        if accelerator is not None and accelerator.num_processes > 1:
            with accelerator.split_between_processes(list(range(n))) as shard:
                sub = data.dataset.select(shard)
                pix = pixels_for(sub, ip, cache_dir=cache_dir, progress=progress and is_main)
                emb = encode_images(model, pix.pixels, ip, batch_size=batch_size, progress=progress and is_main)
                payload = [(list(shard), emb.numpy(), [(shard[r], why) for r, why in pix.bad_rows])]
            gathered = accelerator.gather_for_metrics(payload, use_gather_object=True)
            image = np.zeros((n, gathered[0][1].shape[1]), dtype=np.float32)
            bad = []
            for rows, part, part_bad in gathered:
                image[rows] = part
                bad.extend(part_bad)
        else:
            pkey = pixel_settings_key(ip)
            pix = pixel_cache.get(pkey) if pixel_cache is not None else None
            if pix is None:
                # With a cache folder the pixels are a memory-mapped file: a 50k-image split at
                # 224 px (7.5 GB) need not fit in memory, and the next model reuses the file.
                pix = pixels_for(data.dataset, ip, cache_dir=cache_dir, progress=progress)
                if pixel_cache is not None:
                    pixel_cache[pkey] = pix
            image = encode_images(model, pix.pixels, ip, batch_size=batch_size, progress=progress).numpy()
            bad = list(pix.bad_rows)
        if cache is not None and is_main:
            cache.put(model_key, data_key, torch.from_numpy(np.ascontiguousarray(image)))
            atomic_write_json(bad_file, {"bad_rows": bad})
        if accelerator is not None:
            accelerator.wait_for_everyone()
    valid = np.ones(n, dtype=bool)
    for r, _ in bad:
        valid[r] = False
    text = encode_texts(model, processor.tokenizer, list(prompts), batch_size=batch_size).numpy() if is_main else None
    return image, text, valid, bad


def write_audit(result: AuditResult, output: str | os.PathLike) -> Path:
    """Write the results table (parquet + CSV), rankings and summary into ``output`` atomically."""
    output = Path(output)
    with atomic_dir(output) as tmp:
        result.results.to_parquet(tmp / schema.RESULTS_FILE, index=False)
        result.results.to_csv(tmp / schema.RESULTS_CSV, index=False)
        result.rankings.to_parquet(tmp / schema.RANKINGS_FILE, index=False)
        result.predictions.to_parquet(tmp / schema.PREDICTIONS_FILE, index=False)
        (tmp / schema.SUMMARY_FILE).write_text(json.dumps(_json_ready(result.summary), indent=2) + "\n")
    return output


def _json_ready(obj):
    """Plain JSON: numpy scalars to Python, NaN to null."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run_audit(
    audit: AuditSpec | str | os.PathLike,
    model: str | os.PathLike | Mapping[str, str],
    data: str | Any,
    *,
    output: str | os.PathLike | None = None,
    split: str = "test",
    image_column: str = "image",
    label_column: str | None = "label",
    group_columns: Sequence[str] | None = None,
    data_revision: str | None = None,
    data_config: str | None = None,
    caption_column: str | None = "caption",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = "default",
    n_boot: int | None = None,
    seed: int | None = None,
    accelerator=None,
    trust_remote_code: bool = False,
    progress: bool = True,
    candidate: str | None = None,
    reference: str | None = None,
) -> AuditResult | None:
    """Audit one model, a run folder (base and tuned side by side) or a {role: model} mapping.

    The verdict judges the ``candidate`` role against the ``reference`` role: by default the
    tuned model against its base for a run folder, the model itself for a single model; a
    mapping of several roles names them (``candidate="x", reference="y"``).

    ``model``: hub id, save_pretrained folder, run folder or ``workbench/demo-clip``.
    ``data``: any source ``workbench.data.load_splits`` reads, or a ``datasets.Dataset``.
    Writes into ``output`` (default ``<run>/audit/<audit name>`` for a run folder) when
    given. ``cache_dir="default"`` uses :func:`default_cache_dir`; None disables the cache.
    Returns the result on the main process and None on the others.
    """
    spec = audit if isinstance(audit, AuditSpec) else load_audit_spec(audit)
    roles = resolve_model_roles(model)
    resolve_candidate(list(roles), candidate, reference)  # a wrong role name stops here, before any model loads
    if output is None:
        output = default_output(model, spec.name)
    cache = default_cache_dir() if cache_dir == "default" else cache_dir
    is_main = accelerator is None or accelerator.is_main_process
    data_obj = load_audit_data(data, spec, split=split, image_column=image_column, label_column=label_column,
                               group_columns=group_columns, revision=data_revision, config_name=data_config,
                               caption_column=caption_column)
    prompts = prompts_needed(spec, data_obj.class_labels) + group_prompts_needed(spec, data_obj.table)
    prompts = list(dict.fromkeys(prompts))
    device = accelerator.device if accelerator is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    raw: dict[str, tuple] = {}
    pixel_cache: dict[str, Any] = {}
    for role, ref in roles.items():
        mdl, processor = load_clip(ref["model"], revision=ref["revision"], trust_remote_code=trust_remote_code)
        mdl.to(device)
        fingerprint = model_fingerprint(mdl)
        image, text, valid, bad = embed_for_audit(
            mdl, processor, data_obj, prompts, cache_dir=cache, batch_size=batch_size, accelerator=accelerator,
            pixel_cache=pixel_cache, progress=progress and is_main, model_key=fingerprint,
        )
        raw[role] = (ref, fingerprint, image, text, valid, bad)
        del mdl
    if not is_main:
        return None

    valid = np.logical_and.reduce([r[4] for r in raw.values()])
    warnings = list(data_obj.warnings)
    bad_rows = sorted({b for r in raw.values() for b in r[5]})
    if bad_rows:
        shown = "; ".join(f"row {r}: {why}" for r, why in bad_rows[:5])
        warnings.append(f"{len(bad_rows)} image(s) could not be decoded and are left out ({shown})")
    table = data_obj.table[valid].reset_index(drop=True)
    embeddings = {
        role: ModelEmbeddings(
            image=image[valid],
            text={p: text[i] for i, p in enumerate(prompts)},
            model=ref["model"],
            fingerprint=fingerprint,
        )
        for role, (ref, fingerprint, image, text, _, _) in raw.items()
    }
    info = dict(data_obj.info, n=int(valid.sum()), n_undecodable=len(bad_rows))
    result = compute_audit(spec, table, embeddings, class_labels=data_obj.class_labels, data_info=info,
                           n_boot=n_boot, seed=seed, warnings=warnings, progress=progress, candidate=candidate,
                           reference=reference)
    result.summary["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for role, (ref, *_rest) in raw.items():
        if ref["revision"]:
            result.summary["models"][role]["revision"] = ref["revision"]
    if output is not None:
        write_audit(result, output)
    return result
