"""An audit folder opened for live questions: its models, its data table and its image embeddings.

:func:`open_live_audit` reads what the audit wrote (``summary.json``), loads the same data
split and the same models, checks both against the fingerprints the audit recorded, and
takes each model's image embeddings from the audit's on-disk cache
(:class:`workbench.embed.EmbeddingCache`, keyed by model fingerprint and data key, through
:func:`workbench.audit.runner.embed_for_audit`). The audit's own prompts are encoded in
the audit's own batch, so their embeddings are the ones the audit used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench import schema
from workbench.audit.context import INTERSECTION_SEP
from workbench.audit.runner import (
    AuditData,
    embed_for_audit,
    embedding_data_key,
    load_audit_data,
    resolve_model_roles,
)
from workbench.audit.spec import AttributeSpec, AuditSpec, BootstrapSpec, PolicySpec, SkewSpec
from workbench.data import DataError, pixels_for
from workbench.embed import EmbeddingCache, encode_texts
from workbench.models import ModelLoadError, is_run_folder, load_clip, model_fingerprint
from workbench.paths import embedding_cache_dir


class LiveError(ValueError):
    """The audit folder cannot answer live questions as it is; the message says why and what to do."""


@dataclass
class LiveModel:
    """One audited model role, loaded and checked against the audit's fingerprint."""

    role: str
    reference: str  # the id or folder it was loaded from
    model: Any  # transformers CLIPModel, in eval mode
    processor: Any  # CLIPProcessor
    fingerprint: str
    image: np.ndarray  # (N, D) L2-normalised image embeddings of the audited rows, in the audit's order
    text: dict[str, np.ndarray] = field(default_factory=dict)  # the audit's prompts, encoded as the audit did


@dataclass
class LiveAudit:
    """An audit folder with everything a probe or heat map needs, loaded once."""

    folder: Path
    summary: dict[str, Any]
    spec: AuditSpec
    data: AuditData  # the whole split as the audit loaded it
    table: pd.DataFrame  # the audited rows (decodable for every model), in the audit's order
    models: dict[str, LiveModel]
    cache_dir: Path

    @property
    def roles(self) -> list[str]:
        return list(self.models)

    @property
    def candidate(self) -> str | None:
        return self.summary.get("candidate")

    @property
    def reference(self) -> str | None:
        return self.summary.get("reference")

    @property
    def data_fingerprint(self) -> str:
        return str(self.data.info["fingerprint"])

    def prompt_embedding(self, role: str, prompt: str) -> np.ndarray:
        """(D,) embedding of ``prompt`` by ``role``'s text tower: the audit's own when the audit encoded it."""
        live = self.models[role]
        if prompt in live.text:
            return live.text[prompt]
        return encode_texts(live.model, live.processor.tokenizer, [prompt]).numpy()[0]

    def group_labels(self, attribute: str) -> np.ndarray:
        """Each audited row's group for ``attribute`` (an intersection "a*b" joins the columns' values)."""
        parts = attribute.split(INTERSECTION_SEP)
        missing = [p for p in parts if p not in self.table.columns]
        if missing:
            raise LiveError(f"attribute {attribute!r}: column(s) {missing} are not in the audited table "
                            f"(columns: {', '.join(map(str, self.table.columns))})")
        return self.table[parts].astype(str).agg(INTERSECTION_SEP.join, axis=1).to_numpy()

    def pixels(self, role: str, rows: list[int]) -> torch.Tensor:
        """uint8 (len(rows), 3, H, W) pixels of source rows ``rows`` at ``role``'s input size."""
        position = {int(r): i for i, r in enumerate(self.data.table["row"])}
        unknown = [r for r in rows if int(r) not in position]
        if unknown:
            raise LiveError(f"row(s) {unknown[:5]} are not in split {self.data.info['split']!r} of "
                            f"{self.data.info['source']} ({len(position)} rows)")
        subset = self.data.dataset.select([position[int(r)] for r in rows])
        pix = pixels_for(subset, self.models[role].processor.image_processor, progress=False)
        if pix.bad_rows:
            shown = "; ".join(f"row {rows[i]}: {why}" for i, why in pix.bad_rows[:3])
            raise LiveError(f"image(s) could not be decoded: {shown}")
        return pix.pixels


def spec_from_summary(summary: Mapping[str, Any]) -> AuditSpec:
    """The parts of the audit definition a live question uses, as the audit parsed them.

    ``summary["spec"]`` is the parsed definition with every default filled in (not the YAML
    file's shape), so it is read field by field: attributes, intersections, minimum group
    size, the skew section (prompts, k, targets, controls) and the bootstrap settings. Class
    prompts, group prompts, harmful labels and policy checks are left out: no live question
    computes them.
    """
    raw = summary.get("spec")
    if not isinstance(raw, Mapping):
        raise LiveError("the audit summary holds no 'spec' (the parsed audit definition); re-run the audit "
                        "with this version of the workbench")
    try:
        attributes = tuple(
            AttributeSpec(str(a["column"]), tuple(a["groups"]) if a.get("groups") is not None else None, a.get("reference"))
            for a in raw["attributes"]
        )
        skew = None
        if raw.get("skew"):
            s = raw["skew"]
            skew = SkewSpec(prompts=tuple(s["prompts"]), k=tuple(int(k) for k in s["k"]), targets=tuple(s["targets"]),
                            controls=tuple(s["controls"]))
        boot = raw.get("bootstrap") or {}
        return AuditSpec(
            name=str(raw["name"]),
            attributes=attributes,
            intersections=tuple(tuple(i) for i in raw.get("intersections") or ()),
            min_group_size=int(raw["min_group_size"]),
            skew=skew,
            policy=PolicySpec(checks=(), domain_check=False),
            bootstrap=BootstrapSpec(**{k: boot[k] for k in ("n_boot", "seed", "level", "n_perm") if k in boot}),
            source=str(raw.get("source", "")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise LiveError(f"the audit summary's 'spec' cannot be read ({type(err).__name__}: {err}); re-run the audit") from err


def _model_references(folder: Path, summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """role -> {"model", "revision"}: a run folder's own base and model/, else what the summary recorded."""
    models = summary.get("models")
    if not isinstance(models, Mapping) or not models:
        raise LiveError(f"{folder / schema.SUMMARY_FILE}: no 'models' entry naming the audited models")
    refs = {role: {"model": str(m.get("model", "")), "revision": m.get("revision")} for role, m in models.items()}
    run = folder.parent.parent
    # An audit inside a run folder names its models relative to where it was started; the run
    # folder itself says where its base and its model are.
    if folder.parent.name == schema.RUN_AUDIT_DIR and is_run_folder(run):
        try:
            for role, ref in resolve_model_roles(run).items():
                if role in refs:
                    refs[role] = ref
        except (FileNotFoundError, ValueError) as err:
            raise LiveError(str(err)) from err
    return refs


def _check_cached(cache: EmbeddingCache, folder: Path, role: str, fingerprint: str, data_key: str) -> None:
    bad_rows = folder / f"bad-rows-{data_key}.json"
    if cache.path(fingerprint, data_key).is_file() and bad_rows.is_file():
        return
    raise LiveError(
        f"model {role!r}: no cached image embeddings in {folder} for this model and data "
        f"({cache.path(fingerprint, data_key).name}); the audit wrote them there unless it ran with another cache "
        "folder or without one. Point to that cache folder, re-run the audit, or allow embedding the images again "
        "(allow_image_encoding=True; the dashboard's model settings): the vision tower then runs over the whole split"
    )


def open_live_audit(
    audit_folder: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    allow_image_encoding: bool = False,
    trust_remote_code: bool = False,
) -> LiveAudit:
    """Load an audit folder's models, data and cached image embeddings for live questions.

    ``cache_dir``: the embedding cache the audit used (default :func:`workbench.paths.embedding_cache_dir`).
    Without ``allow_image_encoding`` a missing cache entry is an error before any image is
    embedded; with it, :func:`embed_for_audit` embeds the split as the audit did and caches it.
    """
    folder = Path(audit_folder)
    summary_file = folder / schema.SUMMARY_FILE
    if not summary_file.is_file():
        raise LiveError(f"{folder}: no {schema.SUMMARY_FILE}; pass an audit folder (<run>/audit/<name>)")
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError as err:
        raise LiveError(f"{summary_file}: not valid JSON ({err}); re-run the audit") from err
    spec = spec_from_summary(summary)
    info = summary.get("data") or {}
    source, split, recorded = str(info.get("source", "")), str(info.get("split", "")), str(info.get("fingerprint", ""))
    if not source or not split or source.startswith("<in-memory"):
        raise LiveError(f"{summary_file}: the audited data ({source or 'not recorded'}) cannot be opened again; "
                        "audit a data set on disk or on the hub to probe it live")
    columns = info.get("columns") if isinstance(info.get("columns"), Mapping) else {}
    try:
        data = load_audit_data(source, spec, split=split, image_column=str(columns.get("image") or "image"),
                               label_column=columns.get("label", "label"), group_columns=columns.get("groups") or None)
    except (DataError, FileNotFoundError, ValueError) as err:
        raise LiveError(f"{source} (split {split}): {err}") from err
    if recorded and data.info["fingerprint"] != recorded:
        raise LiveError(f"{source} (split {split}) changed since the audit: fingerprint {data.info['fingerprint']}, "
                        f"the audit read {recorded}; re-run the audit on the data as it is now")

    cache_root = Path(cache_dir) if cache_dir is not None else embedding_cache_dir()
    cache = EmbeddingCache(cache_root)
    audit_prompts = list(dict.fromkeys(str(p) for p in summary.get("prompts") or []))
    recorded_models = summary.get("models") or {}
    loaded: dict[str, tuple] = {}
    pixel_cache: dict[str, Any] = {}
    for role, ref in _model_references(folder, summary).items():
        try:
            model, processor = load_clip(ref["model"], revision=ref["revision"], trust_remote_code=trust_remote_code)
        except ModelLoadError as err:
            raise LiveError(f"model {role!r}: {err}") from err
        model.to(device)
        fingerprint = model_fingerprint(model)
        expected = str((recorded_models.get(role) or {}).get("fingerprint", ""))
        if expected and fingerprint != expected:
            raise LiveError(f"model {role!r} ({ref['model']}): its weights changed since the audit (fingerprint "
                            f"{fingerprint}, the audit recorded {expected}); re-run the audit")
        if not allow_image_encoding:
            data_key = embedding_data_key(data.dataset, processor.image_processor)
            _check_cached(cache, cache_root, role, fingerprint, data_key)
        image, text, valid, _ = embed_for_audit(model, processor, data, audit_prompts, cache_dir=cache_root,
                                                pixel_cache=pixel_cache, progress=False, model_key=fingerprint)
        loaded[role] = (ref["model"], model, processor, fingerprint, image, text, valid)

    # The audited rows are those every model could decode, as in workbench.audit.runner.run_audit.
    valid = np.logical_and.reduce([entry[6] for entry in loaded.values()])
    models = {
        role: LiveModel(role=role, reference=ref, model=model, processor=processor, fingerprint=fingerprint,
                        image=image[valid], text={p: text[i] for i, p in enumerate(audit_prompts)})
        for role, (ref, model, processor, fingerprint, image, text, _) in loaded.items()
    }
    table = data.table[valid].reset_index(drop=True)
    return LiveAudit(folder=folder, summary=summary, spec=spec, data=data, table=table, models=models,
                     cache_dir=cache_root)
