"""The audit's computation on embeddings: every family, every model role, bootstrap intervals.

:func:`compute_audit` needs no model and no images: image embeddings (one row per image),
a table of labels and group values for the same rows, and the text embedding of every
prompt the audit uses. All prompts, k values, groups and bootstrap resamples reuse those
arrays; the bootstrap is one (B, N) matrix of row multiplicities shared by every metric
and every model role, so base and tuned are compared on the same resampled rows.

The metrics themselves live in the audit families (``workbench/audit/families/``); this
module builds what they share (group views, resamples, class labels), runs each family
for each model role, adds the paired deltas and hands the rows to the policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import schema
from workbench.audit.bootstrap import control_resample_weights, stratified_bootstrap_weights, two_sided_p_value
from workbench.audit.context import INTERSECTION_SEP, Collector, ModelContext, build_views
from workbench.audit.families import FAMILIES, METRIC_INFO, group_prompts
from workbench.audit.metrics import holm_adjust
from workbench.audit.policy import judge
from workbench.audit.spec import DELTA_ROLE, AuditSpec
from workbench.audit.summary import build_summary
from workbench.audit.verdict import describe_verdict

DELTA = DELTA_ROLE
__all__ = ["DELTA", "INTERSECTION_SEP", "AuditResult", "ModelEmbeddings", "compute_audit", "group_prompts_needed",
           "prompts_needed"]


@dataclass
class ModelEmbeddings:
    """What the audit needs from one model: image rows and the prompts it encoded."""

    image: np.ndarray  # (N, D) float32, L2-normalised, same row order as the table
    text: Mapping[str, np.ndarray]  # prompt -> (D,) L2-normalised
    model: str = ""  # id or folder, for the summary
    fingerprint: str = ""


@dataclass
class AuditResult:
    results: pd.DataFrame  # schema.RESULT_COLUMNS
    rankings: pd.DataFrame  # model, prompt, rank, row, score, <group columns>
    summary: dict[str, Any]
    replicates: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, row, label, predicted, <group columns>


def prompts_needed(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    """Every text the audit encodes, once each, in a stable order (family by family)."""
    out: list[str] = []
    for family in FAMILIES:
        out.extend(family.prompts(spec, class_labels))
    return list(dict.fromkeys(out))


def group_prompts_needed(spec: AuditSpec, table: pd.DataFrame, *, listed_only: bool = False) -> list[str]:
    """Texts that depend on the data: prompts for group values found in it but not listed in the
    spec, and captions. ``listed_only``: leave out the texts a family does not list in the summary."""
    out: list[str] = []
    for family in FAMILIES:
        if family.list_data_prompts or not listed_only:
            out.extend(family.data_prompts(spec, table))
    return list(dict.fromkeys(out))


def compute_audit(
    spec: AuditSpec,
    table: pd.DataFrame,
    embeddings: Mapping[str, ModelEmbeddings],
    *,
    class_labels: Sequence[str] | None = None,
    data_info: Mapping[str, Any] | None = None,
    compare: tuple[str, str] | None = ("base", "tuned"),
    n_boot: int | None = None,
    seed: int | None = None,
    warnings: Sequence[str] = (),
    progress: bool = False,
    candidate: str | None = None,
    reference: str | None = None,
) -> AuditResult:
    """Every metric of ``spec`` for every model role in ``embeddings``, with intervals and verdicts.

    ``table`` has one row per image (same order as each ``image`` array) with the group
    columns, optionally ``label`` (class name) and ``row`` (index in the source split).

    The verdict judges one ``candidate`` role against an optional ``reference`` role; delta
    rows (candidate minus reference, paired resamples) are added when both are present.
    By default the candidate and reference are ``compare``'s second and first role when
    ``embeddings`` has them (a run folder's tuned and base), else the only role.
    """
    n = len(table)
    if n == 0:
        raise ValueError("the audited data has no rows")
    for role, emb in embeddings.items():
        if emb.image.shape[0] != n:
            raise ValueError(f"model {role!r}: {emb.image.shape[0]} image embeddings for {n} table rows")
    candidate, reference = resolve_candidate(list(embeddings), candidate, reference, compare)
    n_boot = spec.bootstrap.n_boot if n_boot is None else n_boot
    seed = spec.bootstrap.seed if seed is None else seed
    warns = list(spec.warnings) + list(warnings)
    not_computed: list[dict] = []
    views = build_views(spec, table, warns, not_computed)
    for v in views:
        for g, size in zip(v.groups, v.sizes):
            if size < spec.min_group_size:
                warns.append(f"group {g!r} of {v.name!r} has {size} images, below min_group_size={spec.min_group_size}")

    # Strata = the finest intersection of all audited columns: every group keeps its size.
    single = [v for v in views if not v.is_intersection]
    if single:
        strata = np.unique(np.stack([v.codes for v in single], axis=1), axis=0, return_inverse=True)[1].ravel()
    else:
        strata = np.zeros(n, dtype=np.int64)
    weights = stratified_bootstrap_weights(strata, n_boot, seed)
    all_weights = np.vstack([np.ones((1, n), dtype=np.float32), weights])  # row 0 = the data itself
    control_weights = None
    if spec.skew and spec.skew.controls:
        n_controls = len(spec.skew.controls)
        control_weights = np.vstack([np.ones((1, n_controls), dtype=np.float32),
                                     control_resample_weights(n_controls, n_boot, seed)])

    col = Collector(spec.name, spec.bootstrap.level, spec.min_group_size)
    labels, label_problem = _resolve_labels(spec, table, class_labels)
    class_problem = _class_prompt_problem(spec, labels)
    tests: dict[str, list[dict[str, Any]]] = {}
    roles = list(embeddings)
    for role in tqdm(roles, desc="auditing models", disable=not progress or len(roles) < 2):
        emb = embeddings[role]
        ctx = ModelContext(
            role=role, spec=spec, table=table, image=np.asarray(emb.image, dtype=np.float32), text=emb.text,
            views=views, weights=all_weights, labels=labels, label_problem=label_problem, class_problem=class_problem,
            collector=col, warnings=warns, tests=tests, control_weights=control_weights,
        )
        for family in FAMILIES:
            family.compute(ctx)

    delta_tests: list[dict] = []
    pair = (reference, candidate) if reference is not None else None
    if pair is not None:
        delta_tests = _deltas(col, pair)

    results = pd.DataFrame(col.rows, columns=list(schema.RESULT_COLUMNS))
    judgement = judge(spec, results, col.reps, candidate=candidate, reference=reference, skipped=warns)
    models = {role: {"model": e.model, "fingerprint": e.fingerprint} for role, e in embeddings.items()}
    verdict = describe_verdict(judgement, results, candidate=candidate, reference=reference,
                               model_ids={role: e.model for role, e in embeddings.items()})
    weat = tests.get(group_prompts.TESTS, [])
    _holm(weat, spec.policy.alpha, mark_significant=True)
    _holm(delta_tests, spec.policy.alpha, mark_significant=False)
    for row in col.rows:
        if row["status"] == "not_computed":
            entry = {"metric": row["metric"], "model": row["model"], "reason": row["note"]}
            for key in ("attribute", "group", "label", "prompt", "k", "target"):
                if row[key] not in ("", 0):
                    entry[key] = row[key]
            not_computed.append(entry)

    # Texts that grow with the data (captions) are embedded but only counted in the summary.
    listed = group_prompts_needed(spec, table, listed_only=True)
    unlisted = set(group_prompts_needed(spec, table)) - set(listed)
    summary = build_summary(
        spec=spec,
        models=models,
        data_info={**(data_info or {"n": n}), "texts_not_listed": len(unlisted)},
        views=views,
        class_labels=labels,
        prompts=prompts_needed(spec, labels) + listed,
        n_boot=n_boot,
        seed=seed,
        compare=pair,
        candidate=candidate,
        reference=reference,
        judgement=judgement,
        verdict=verdict,
        weat_tests=weat,
        delta_tests=delta_tests,
        not_computed=not_computed,
        warnings=warns,
    )
    group_cols = [v.name for v in single]
    rank_cols = ["model", "prompt", "rank", "row", "score", *group_cols]
    ranking_df = pd.concat(col.rankings, ignore_index=True) if col.rankings else pd.DataFrame(columns=rank_cols)
    predictions = pd.concat(col.predictions, ignore_index=True) if col.predictions else pd.DataFrame(
        columns=["model", "row", "label", "predicted", *group_cols])
    return AuditResult(results=results, rankings=ranking_df, summary=summary, replicates=col.reps, predictions=predictions)


def resolve_candidate(roles: Sequence[str], candidate: str | None, reference: str | None,
                      compare: tuple[str, str] | None = ("base", "tuned")) -> tuple[str, str | None]:
    """(candidate, reference) roles of an audit of ``roles``; see :func:`compute_audit`."""
    if candidate is None:
        if compare and compare[1] in roles:
            candidate = compare[1]
            if reference is None and compare[0] in roles:
                reference = compare[0]
        elif len(roles) == 1:
            candidate = roles[0]
        else:
            raise ValueError(f"the audit has several models {list(roles)}: name the one it judges with candidate=... "
                             "(and its reference=...)")
    if candidate not in roles:
        raise ValueError(f"candidate {candidate!r} is not one of the audited models {list(roles)}")
    if reference is not None and reference not in roles:
        raise ValueError(f"reference {reference!r} is not one of the audited models {list(roles)}")
    if reference == candidate:
        raise ValueError(f"candidate and reference are the same model {candidate!r}")
    if candidate == DELTA or reference == DELTA:
        raise ValueError(f"{DELTA!r} names the candidate-minus-reference rows; call the models something else")
    return candidate, reference


def _pair_key(row: Mapping[str, Any]) -> tuple:
    """What pairs two models' rows: the row identity without the model (and without the group
    where the group only names who attains the statistic)."""
    info = METRIC_INFO.get(row["metric"])
    columns = ("metric", "attribute", "label", "prompt", "k", "target")
    if info is None or not info.group_attains:
        columns = ("metric", "attribute", "group", "label", "prompt", "k", "target")
    return tuple(row[c] for c in columns)


def _holm(tests: list[dict[str, Any]], alpha: float, *, mark_significant: bool) -> None:
    """Add each test's Holm-adjusted p-value (over the list) as ``p_holm``."""
    if not tests:
        return
    for t, p in zip(tests, holm_adjust([t["p_value"] for t in tests])):
        t["p_holm"] = float(p)
        if mark_significant:
            t["significant"] = bool(p < alpha)


def _resolve_labels(spec: AuditSpec, table: pd.DataFrame, class_labels: Sequence[str] | None) -> tuple[list[str], str]:
    """Class names of the zero-shot task and, when accuracy cannot be computed, why."""
    if spec.classes is None:
        return [], "the audit defines no classes"
    if spec.classes.labels is not None:
        labels = list(spec.classes.labels)
    elif class_labels:
        labels = list(class_labels)
    elif "label" in table.columns:
        labels = sorted(set(table["label"].astype(str)))
    else:
        return [], "the audit lists no classes.labels and the data has no label column (pass --label-column)"
    if "label" not in table.columns:
        return labels, "the data has no label column (pass --label-column); zero-shot accuracy needs true labels"
    unknown = sorted(set(table["label"].astype(str)) - set(labels))
    if unknown:
        counts = table["label"].astype(str).value_counts()
        detail = ", ".join(f"{u!r} ({int(counts[u])} images)" for u in unknown[:10])
        return labels, f"data labels not among the audit's classes {labels}: {detail}; fix classes.labels or --label-column"
    return labels, ""


def _class_prompt_problem(spec: AuditSpec, labels: Sequence[str]) -> str:
    if spec.classes is None or not labels:
        return "the audit defines no classes"
    empty = [c for c in labels if not spec.classes.prompts_for(c)]
    if empty:
        return f"class(es) {empty} have no prompts (add classes.templates or classes.prompts)"
    return ""


def _deltas(col: Collector, compare: tuple[str, str]) -> list[dict]:
    """Rows for second-minus-first with paired-bootstrap intervals; returns the delta tests."""
    first, second = compare
    by_key = {}
    for row in col.rows:
        if row["model"] in compare and row["metric"] != "weat_p_value":
            by_key.setdefault(_pair_key(row), {})[row["model"]] = row
    tests = []
    for key, pair in by_key.items():
        if first not in pair or second not in pair:
            continue
        a, b = pair[first], pair[second]
        # The delta row takes the second model's group where the group names who attains the statistic.
        where = {c: b[c] if c == "group" else a[c] for c in ("attribute", "group", "label", "prompt", "k", "target")}
        if "not_computed" in (a["status"], b["status"]):
            col.skip(DELTA, a["metric"], a["note"] or b["note"], **where)
            continue
        reps_a, reps_b = col.reps.get(col.key(a)), col.reps.get(col.key(b))
        reps = reps_b - reps_a if reps_a is not None and reps_b is not None else None
        status = "small_group" if "small_group" in (a["status"], b["status"]) else "ok"
        col.add(DELTA, a["metric"], b["value"] - a["value"], reps, n=a["n"], status=status,
                note=a["note"] if status != "ok" else "", **where)
        if reps is not None:
            tests.append({"metric": a["metric"], **where, "delta": b["value"] - a["value"],
                          "ci_low": col.rows[-1]["ci_low"], "ci_high": col.rows[-1]["ci_high"],
                          "p_value": two_sided_p_value(b["value"] - a["value"], reps)})
    return tests
