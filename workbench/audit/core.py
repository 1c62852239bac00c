"""The audit's computation on embeddings: every metric, every model role, bootstrap intervals.

:func:`compute_audit` needs no model and no images: image embeddings (one row per image),
a table of labels and group values for the same rows, and the text embedding of every
prompt the audit uses. All prompts, k values, groups and bootstrap resamples reuse those
arrays; the bootstrap is one (B, N) matrix of row multiplicities shared by every metric
and every model role, so base and tuned are compared on the same resampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import schema
from workbench.audit import metrics as M
from workbench.audit.bootstrap import percentile_interval, stratified_bootstrap_weights, two_sided_p_value
from workbench.audit.spec import AuditSpec

DELTA = "delta"
INTERSECTION_SEP = "*"
DEFAULT_HARMFUL_TEMPLATE = "{}"
# Bound on the (resamples x k x groups) block the ranking bootstrap holds at once.
_RANKING_BLOCK = 20_000_000


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


@dataclass
class _View:
    """One sensitive attribute (or intersection) as integer codes over the audited rows."""

    name: str
    codes: np.ndarray
    groups: list[str]
    reference: int  # index into groups
    sizes: np.ndarray

    @property
    def members(self) -> np.ndarray:
        return np.eye(len(self.groups))[self.codes]


def ensemble(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Prompt ensemble: normalise each prompt embedding, average, normalise again."""
    v = np.stack([x / np.linalg.norm(x) for x in vectors]).mean(axis=0)
    return v / np.linalg.norm(v)


def prompts_needed(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    """Every text the audit encodes, once each, in a stable order."""
    out: list[str] = []
    labels = list(spec.classes.labels or class_labels or []) if spec.classes else []
    if spec.classes:
        for label in labels:
            out.extend(spec.classes.prompts_for(label))
    if spec.skew:
        out.extend(spec.skew.prompts)
    for gp in spec.group_prompts:
        groups = list(spec.attribute(gp.attribute).groups or []) + list(gp.terms)
        for concept in gp.concepts:
            out.extend(gp.prompt(g, concept) for g in groups)
    if spec.harmful:
        class_templates = spec.classes.templates if spec.classes else ()
        for label in spec.harmful.labels:
            out.extend(spec.harmful.prompts_for(label, class_templates))
    return list(dict.fromkeys(out))


def group_prompts_needed(spec: AuditSpec, table: pd.DataFrame) -> list[str]:
    """Group-prompt texts for group values found in the data but not listed in the spec."""
    out: list[str] = []
    for gp in spec.group_prompts:
        if gp.attribute in table.columns:
            for g in sorted(set(table[gp.attribute].astype(str))):
                out.extend(gp.prompt(g, c) for c in gp.concepts)
    return list(dict.fromkeys(out))


class _Collector:
    """Result rows plus the bootstrap replicates behind each, keyed by row identity."""

    def __init__(self, audit: str, level: float, min_group_size: int):
        self.audit = audit
        self.level = level
        self.min_group_size = min_group_size
        self.rows: list[dict[str, Any]] = []
        self.reps: dict[tuple, np.ndarray] = {}
        self.predictions: list[pd.DataFrame] = []

    @staticmethod
    def key(row: Mapping[str, Any]) -> tuple:
        return tuple(row[c] for c in ("model", "metric", "attribute", "group", "label", "prompt", "k", "target"))

    def add(
        self,
        model: str,
        metric: str,
        value: float,
        reps: np.ndarray | None,
        *,
        attribute: str = "",
        group: str = "",
        label: str = "",
        prompt: str = "",
        k: int = 0,
        target: str = "",
        n: int = 0,
        status: str = "ok",
        note: str = "",
    ) -> None:
        low = high = float("nan")
        if reps is not None:
            # A ratio over a zero rate is undefined in that resample, not infinite.
            reps = np.asarray(reps, dtype=np.float64)
            reps = np.where(np.isfinite(reps), reps, np.nan)
        if reps is not None and status != "not_computed":
            low, high = (float(x[0]) for x in percentile_interval(np.asarray(reps)[:, None], self.level))
        if status == "not_computed":
            value = float("nan")
        row = {
            "model": model,
            "audit": self.audit,
            "metric": metric,
            "attribute": attribute,
            "group": group,
            "label": label,
            "prompt": prompt,
            "k": int(k),
            "target": target,
            "value": float(value),
            "ci_low": low,
            "ci_high": high,
            "n": int(n),
            "status": status,
            "note": note,
        }
        self.rows.append(row)
        if reps is not None and status != "not_computed":
            self.reps[self.key(row)] = np.asarray(reps, dtype=np.float32)

    def skip(self, model: str, metric: str, reason: str, **where: Any) -> None:
        self.add(model, metric, float("nan"), None, status="not_computed", note=reason, **where)

    def size_status(self, n: int) -> tuple[str, str]:
        if n < self.min_group_size:
            return "small_group", f"n={n} is below min_group_size={self.min_group_size}"
        return "ok", ""


# ---------------------------------------------------------------------------------------
# preparing the groups


def _build_views(spec: AuditSpec, table: pd.DataFrame, warnings: list[str], not_computed: list[dict]) -> list[_View]:
    views: dict[str, _View] = {}
    for attr in spec.attributes:
        col = attr.column
        if col not in table.columns:
            reason = (
                f"group column {col!r} is not in the data (columns: {', '.join(map(str, table.columns))}); "
                "pass --group-columns or fix the audit's attributes"
            )
            warnings.append(reason)
            not_computed.append({"metric": f"all metrics for attribute {col!r}", "reason": reason})
            continue
        values = table[col].astype(str).to_numpy()
        present = sorted(set(values))
        listed = list(attr.groups or [])
        extra = [g for g in present if g not in listed]
        if listed and extra:
            counts = {g: int((values == g).sum()) for g in extra}
            warnings.append(f"column {col!r} holds values the audit does not list: {counts}; they are audited as their own groups")
        groups = [g for g in listed if g in present] + (extra if listed else present)
        for g in listed:
            if g not in present:
                reason = f"group {g!r} of {col!r} has no images in the data"
                warnings.append(reason)
                not_computed.append({"metric": "all metrics", "attribute": col, "group": g, "reason": reason})
        views[col] = _make_view(col, values, groups, attr.reference, warnings)
    for inter in spec.intersections:
        name = INTERSECTION_SEP.join(inter)
        missing = [c for c in inter if c not in views]
        if missing:
            reason = f"intersection {name!r} needs column(s) {missing} that are not in the data"
            not_computed.append({"metric": f"all metrics for attribute {name!r}", "reason": reason})
            continue
        parts = [views[c] for c in inter]
        values = np.array(
            [INTERSECTION_SEP.join(p.groups[c] for p, c in zip(parts, codes)) for codes in zip(*(p.codes for p in parts))]
        )
        present = set(values)
        groups = []
        for combo in _product([p.groups for p in parts]):
            g = INTERSECTION_SEP.join(combo)
            if g in present:
                groups.append(g)
            else:
                reason = f"intersection group {g!r} of {name!r} has no images in the data"
                warnings.append(reason)
                not_computed.append({"metric": "all metrics", "attribute": name, "group": g, "reason": reason})
        refs = [spec.attribute(c).reference for c in inter]
        reference = INTERSECTION_SEP.join(refs) if all(refs) else None
        views[name] = _make_view(name, values, groups, reference, warnings)
    return list(views.values())


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for options in lists:
        out = [prefix + (o,) for prefix in out for o in options]
    return out


def _make_view(name: str, values: np.ndarray, groups: list[str], reference: str | None, warnings: list[str]) -> _View:
    index = {g: i for i, g in enumerate(groups)}
    codes = np.array([index[v] for v in values], dtype=np.int64)
    sizes = np.bincount(codes, minlength=len(groups))
    if reference is not None and reference in index:
        ref = index[reference]
    else:
        ref = int(np.argmax(sizes))  # ties: the first listed group
        if reference is not None:
            warnings.append(f"reference group {reference!r} of {name!r} has no images; using the largest group {groups[ref]!r}")
    return _View(name, codes, groups, ref, sizes)


# ---------------------------------------------------------------------------------------
# the computation


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
) -> AuditResult:
    """Every metric of ``spec`` for every model role in ``embeddings``, with intervals and verdicts.

    ``table`` has one row per image (same order as each ``image`` array) with the group
    columns, optionally ``label`` (class name) and ``row`` (index in the source split).
    With both roles of ``compare`` present, delta rows (second minus first) are added.
    """
    from workbench.audit.policy import apply_policy

    n = len(table)
    if n == 0:
        raise ValueError("the audited data has no rows")
    for role, emb in embeddings.items():
        if emb.image.shape[0] != n:
            raise ValueError(f"model {role!r}: {emb.image.shape[0]} image embeddings for {n} table rows")
    n_boot = spec.bootstrap.n_boot if n_boot is None else n_boot
    seed = spec.bootstrap.seed if seed is None else seed
    warns = list(spec.warnings) + list(warnings)
    not_computed: list[dict] = []
    views = _build_views(spec, table, warns, not_computed)
    for v in views:
        for g, size in zip(v.groups, v.sizes):
            if size < spec.min_group_size:
                warns.append(f"group {g!r} of {v.name!r} has {size} images, below min_group_size={spec.min_group_size}")

    # Strata = the finest intersection of all audited columns: every group keeps its size.
    single = [v for v in views if INTERSECTION_SEP not in v.name]
    if single:
        strata = np.unique(np.stack([v.codes for v in single], axis=1), axis=0, return_inverse=True)[1].ravel()
    else:
        strata = np.zeros(n, dtype=np.int64)
    weights = stratified_bootstrap_weights(strata, n_boot, seed)
    all_weights = np.vstack([np.ones((1, n), dtype=np.float32), weights])  # row 0 = the data itself

    col = _Collector(spec.name, spec.bootstrap.level, spec.min_group_size)
    rankings: list[pd.DataFrame] = []
    labels, label_problem = _resolve_labels(spec, table, class_labels)
    class_problem = _class_prompt_problem(spec, labels)
    roles = list(embeddings)
    extra: dict[str, Any] = {"weat_tests": []}
    for role in tqdm(roles, desc="auditing models", disable=not progress or len(roles) < 2):
        emb = embeddings[role]
        image = np.asarray(emb.image, dtype=np.float32)
        _zero_shot(col, role, spec, table, image, emb.text, labels, label_problem or class_problem, views, all_weights)
        if spec.skew:
            rankings.extend(_skew(col, role, spec, table, image, emb.text, views, all_weights, warns))
        _group_prompts(col, role, spec, image, emb.text, views, all_weights, extra)
        _harmful(col, role, spec, image, emb.text, labels, class_problem, views, all_weights)

    delta_tests: list[dict] = []
    if compare and compare[0] in embeddings and compare[1] in embeddings:
        delta_tests = _deltas(col, compare)

    results = pd.DataFrame(col.rows, columns=list(schema.RESULT_COLUMNS))
    checks, verdict, n_check_tests = apply_policy(spec, results, col.reps, skipped=warns)
    weat = extra["weat_tests"]
    holm_weat = M.holm_adjust([t["p_value"] for t in weat]) if weat else []
    for t, p in zip(weat, holm_weat):
        t["p_holm"] = float(p)
        t["significant"] = bool(p < spec.policy.alpha)
    holm_delta = M.holm_adjust([t["p_value"] for t in delta_tests]) if delta_tests else []
    for t, p in zip(delta_tests, holm_delta):
        t["p_holm"] = float(p)
    n_tests = n_check_tests + sum(not math.isnan(t["p_value"]) for t in weat) + sum(
        not math.isnan(t["p_value"]) for t in delta_tests
    )
    for row in col.rows:
        if row["status"] == "not_computed":
            entry = {"metric": row["metric"], "model": row["model"], "reason": row["note"]}
            for key in ("attribute", "group", "label", "prompt", "k", "target"):
                if row[key] not in ("", 0):
                    entry[key] = row[key]
            not_computed.append(entry)

    group_cols = [v.name for v in views if INTERSECTION_SEP not in v.name]
    rank_cols = ["model", "prompt", "rank", "row", "score", *group_cols]
    summary = {
        "schema_version": schema.RESULTS_SCHEMA_VERSION,
        "audit": spec.name,
        "models": {role: {"model": e.model, "fingerprint": e.fingerprint} for role, e in embeddings.items()},
        "data": dict(data_info or {"n": n}),
        "spec": spec.to_dict(),
        "groups": {
            v.name: {"groups": v.groups, "sizes": [int(s) for s in v.sizes], "reference": v.groups[v.reference]}
            for v in views
        },
        "class_labels": list(labels) if labels else [],
        "prompts": prompts_needed(spec, labels) + group_prompts_needed(spec, table),
        "k": list(spec.skew.k) if spec.skew else [],
        "targets": list(spec.skew.targets) if spec.skew else [],
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "level": spec.bootstrap.level,
            "stratified_by": [v.name for v in single],
            "paired": True,
            "interval": (
                "percentile, per row, not adjusted for multiplicity; for max/min-type statistics (gaps, ratios of "
                "extremes, MaxSkew) it is biased away from zero and can exclude the estimate: read its far end as "
                "the plausible size"
            ),
            "p_values": "Wald test with the bootstrap standard error; Holm within each family",
        },
        "conventions": {
            "skew_absent_group": "a group absent from the top k is counted with share 1/k (reference code); such rows say so in note",
            "ties": "equal scores are ordered by row index, so exactly k images count",
            "target_uniform": "1/A over the groups that have images",
            "max_skew_std": "population standard deviation (ddof=0) over prompts",
            "weat_effect_size": "(mean s over X - mean s over Y) / sample std (ddof=1) of s over X and Y; s = cos(own prompt) - cos(reference group's prompt)",
            "gap_direction": "differences are raw gaps (0 is equal); ratios are min/max or group/reference (1 is equal)",
            "delta": f"{compare[1]} minus {compare[0]}" if compare else "",
        },
        "checks": checks,
        "verdict": verdict,
        "not_computed": not_computed,
        "warnings": list(dict.fromkeys(warns)),
        "n_tests": int(n_tests),
        "multiple_testing": {
            "method": "holm",
            "alpha": spec.policy.alpha,
            "families": {
                "policy_checks": int(n_check_tests),
                "weat": int(sum(not math.isnan(t["p_value"]) for t in weat)),
                "delta": int(sum(not math.isnan(t["p_value"]) for t in delta_tests)),
            },
        },
        "weat_tests": weat,
        "delta_significant": [t for t in delta_tests if t["p_holm"] < spec.policy.alpha],
    }
    ranking_df = pd.concat(rankings, ignore_index=True) if rankings else pd.DataFrame(columns=rank_cols)
    predictions = pd.concat(col.predictions, ignore_index=True) if col.predictions else pd.DataFrame(
        columns=["model", "row", "label", "predicted", *group_cols])
    return AuditResult(results=results, rankings=ranking_df, summary=summary, replicates=col.reps, predictions=predictions)


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


def _rows_ci(reps: np.ndarray) -> np.ndarray:
    """Drop the point-estimate row (row 0) of an all-weights result."""
    return reps[1:]


def _zero_shot(col, role, spec, table, image, text, labels, problem, views, all_weights) -> None:
    n = len(table)
    if problem:
        col.skip(role, "accuracy", problem, group=schema.OVERALL)
        return
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    class_emb = np.stack([ensemble([text[p] for p in spec.classes.prompts_for(c)]) for c in labels])
    pred = np.argmax(image @ class_emb.T, axis=1)
    index = {c: i for i, c in enumerate(labels)}
    truth = np.array([index[c] for c in table["label"].astype(str)])
    hits = (pred == truth).astype(np.float64)
    # Per-image predictions feed confusion matrices in the dashboard (never recomputed there).
    per_image = pd.DataFrame({"model": role, "row": table["row"].to_numpy(), "label": table["label"].astype(str).to_numpy(),
                              "predicted": np.asarray(labels, dtype=object)[pred]})
    for v in views:
        if INTERSECTION_SEP not in v.name:
            per_image[v.name] = np.asarray(v.groups, dtype=object)[v.codes]
    col.predictions.append(per_image)
    overall = M.group_rates_weighted(hits, np.ones((n, 1)), all_weights)[:, 0]
    col.add(role, "accuracy", overall[0], _rows_ci(overall), group=schema.OVERALL, n=n)
    class_members = np.eye(len(labels))[truth]
    per_class = M.group_rates_weighted(hits, class_members, all_weights)
    class_sizes = class_members.sum(axis=0).astype(int)
    for ci, c in enumerate(labels):
        if class_sizes[ci] == 0:
            col.skip(role, "class_accuracy", f"no images of class {c!r}", group=schema.OVERALL, label=c)
        else:
            col.add(role, "class_accuracy", per_class[0, ci], _rows_ci(per_class[:, ci]), group=schema.OVERALL, label=c, n=class_sizes[ci])

    for v in views:
        if len(v.groups) < 1:
            continue
        # fairlearn gives the point estimates and counts; the bootstrap below reuses the same rows.
        mf = MetricFrame(
            metrics={"accuracy": accuracy_score, "count": count},
            y_true=truth,
            y_pred=pred,
            sensitive_features=pd.Series(np.array(v.groups)[v.codes], name=v.name),
        )
        by_group = mf.by_group
        rates = M.group_rates_weighted(hits, v.members, all_weights)  # (B+1, G)
        ref = v.reference
        small = [g for g, s in zip(v.groups, v.sizes) if s < spec.min_group_size]
        for gi, g in enumerate(v.groups):
            size = int(by_group.loc[g, "count"])
            status, note = col.size_status(size)
            acc = float(by_group.loc[g, "accuracy"])
            col.add(role, "accuracy", acc, _rows_ci(rates[:, gi]), attribute=v.name, group=g, n=size, status=status, note=note)
            if gi != ref:
                col.add(role, "accuracy_difference", acc - float(by_group.loc[v.groups[ref], "accuracy"]),
                        _rows_ci(rates[:, gi] - rates[:, ref]), attribute=v.name, group=g, n=size, status=status, note=note)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio_reps = rates[:, gi] / rates[:, ref]
                ref_acc = float(by_group.loc[v.groups[ref], "accuracy"])
                col.add(role, "accuracy_ratio", acc / ref_acc if ref_acc > 0 else float("nan"),
                        _rows_ci(ratio_reps), attribute=v.name, group=g, n=size, status=status, note=note)
        agg_status, agg_note = ("small_group", f"groups below min_group_size: {small}") if small else ("ok", "")
        if len(v.groups) < 2:
            col.skip(role, "accuracy_gap", f"{v.name!r} has fewer than two groups with images", attribute=v.name)
        else:
            gap_reps = rates.max(axis=1) - rates.min(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_reps = rates.min(axis=1) / rates.max(axis=1)
            col.add(role, "accuracy_gap", float(mf.difference(method="between_groups")["accuracy"]), _rows_ci(gap_reps),
                    attribute=v.name, n=n, status=agg_status, note=agg_note)
            col.add(role, "accuracy_min_ratio", float(mf.ratio(method="between_groups")["accuracy"]), _rows_ci(ratio_reps),
                    attribute=v.name, n=n, status=agg_status, note=agg_note)

        # Per class within each group, and one-vs-rest parity views per class.
        cell = v.members[:, :, None] * class_members[:, None, :]  # (N, G, C)
        cell_rates = M.group_rates_weighted(hits, cell.reshape(n, -1), all_weights).reshape(-1, len(v.groups), len(labels))
        cell_sizes = cell.sum(axis=0).astype(int)
        for gi, g in enumerate(v.groups):
            for ci, c in enumerate(labels):
                if cell_sizes[gi, ci] == 0:
                    col.skip(role, "class_accuracy", f"no images of class {c!r} in group {g!r}", attribute=v.name, group=g, label=c)
                    continue
                status, note = col.size_status(int(cell_sizes[gi, ci]))
                col.add(role, "class_accuracy", cell_rates[0, gi, ci], _rows_ci(cell_rates[:, gi, ci]),
                        attribute=v.name, group=g, label=c, n=int(cell_sizes[gi, ci]), status=status, note=note)
        if len(v.groups) < 2:
            continue
        for ci, c in enumerate(labels):
            yt, yp = truth == ci, pred == ci
            dp, eo = M.dp_eo_weighted(yt, yp, v.codes, len(v.groups), all_weights)
            col.add(role, "demographic_parity_difference", dp[0], _rows_ci(dp), attribute=v.name, label=c, n=n,
                    status=agg_status, note=agg_note)
            if np.isnan(eo[0]):
                lacking = [g for gi, g in enumerate(v.groups) if cell_sizes[gi, ci] in (0, v.sizes[gi])]
                col.skip(role, "equalized_odds_difference",
                         f"groups {lacking} have no images of class {c!r} or only such images, so a rate is undefined",
                         attribute=v.name, label=c)
            else:
                col.add(role, "equalized_odds_difference", eo[0], _rows_ci(eo), attribute=v.name, label=c, n=n,
                        status=agg_status, note=agg_note)


def _skew(col, role, spec, table, image, text, views, all_weights, warns) -> list[pd.DataFrame]:
    n = image.shape[0]
    ks_ok = [k for k in spec.skew.k if k < n]
    for k in spec.skew.k:
        if k >= n:
            reason = (f"k={k} is not smaller than the number of images ({n}); at k=N skew only reflects the data's "
                      "make-up, so pick a smaller k")
            warns.append(reason)
            for v in views:
                col.skip(role, "max_skew", reason, attribute=v.name, k=k, prompt=schema.ALL_PROMPTS)
    prompts = list(spec.skew.prompts)
    targets = list(spec.skew.targets)
    usable = [v for v in views if len(v.groups) >= 2]
    for v in views:
        if len(v.groups) < 2:
            col.skip(role, "max_skew", f"{v.name!r} has fewer than two groups with images", attribute=v.name)
    rank_frames = []
    kmax = max(ks_ok) if ks_ok else 0
    # per (view, k, target): (P, B+1) max_skew and ndkl for the aggregates over prompts
    agg_max: dict[tuple, list[np.ndarray]] = {}
    agg_nd: dict[tuple, list[np.ndarray]] = {}
    row_ids = table["row"].to_numpy() if "row" in table.columns else np.arange(n)
    group_cols = [v.name for v in views if INTERSECTION_SEP not in v.name]
    for prompt in prompts:
        scores = image @ text[prompt]
        order = M.rank_order(scores)
        if kmax:
            top = order[:kmax]
            frame = pd.DataFrame({"model": role, "prompt": prompt, "rank": np.arange(1, kmax + 1),
                                  "row": row_ids[top], "score": scores[top].astype(np.float64)})
            for gcol in group_cols:
                frame[gcol] = table[gcol].astype(str).to_numpy()[top]
            rank_frames.append(frame)
        if not ks_ok:
            continue
        for v in usable:
            target_dists = [M.target_distribution(v.codes, len(v.groups), t) for t in targets]
            skew, nd = _ranking_in_blocks(order, v, ks_ok, target_dists, all_weights)
            counts_top = {k: np.bincount(v.codes[order[:k]], minlength=len(v.groups)) for k in ks_ok}
            for ki, k in enumerate(ks_ok):
                for ti, t in enumerate(targets):
                    where = dict(attribute=v.name, prompt=prompt, k=k, target=t)
                    for gi, g in enumerate(v.groups):
                        absent = counts_top[k][gi] == 0
                        note = "absent from the top k; share counted as 1/k" if absent else ""
                        col.add(role, "skew", skew[0, ki, ti, gi], _rows_ci(skew[:, ki, ti, gi]), group=g,
                                n=int(v.sizes[gi]), note=note, **where)
                    mx = np.nanmax(skew[:, ki, ti, :], axis=1)
                    mn = np.nanmin(skew[:, ki, ti, :], axis=1)
                    col.add(role, "max_skew", mx[0], _rows_ci(mx), n=k, **where)
                    col.add(role, "min_skew", mn[0], _rows_ci(mn), n=k, **where)
                    col.add(role, "ndkl", nd[0, ki, ti], _rows_ci(nd[:, ki, ti]), n=k, **where)
                    agg_max.setdefault((v.name, k, t), []).append(mx)
                    agg_nd.setdefault((v.name, k, t), []).append(nd[:, ki, ti])
    for (name, k, t), series in agg_max.items():
        mx = np.stack(series)  # (P, B+1)
        nd = np.stack(agg_nd[(name, k, t)])
        where = dict(attribute=name, prompt=schema.ALL_PROMPTS, k=k, target=t, n=k)
        mean_reps, std_reps, nd_reps = mx.mean(axis=0), mx.std(axis=0), nd.mean(axis=0)
        col.add(role, "max_skew_mean", mean_reps[0], _rows_ci(mean_reps), **where)
        col.add(role, "max_skew_std", std_reps[0], _rows_ci(std_reps), **where)
        col.add(role, "ndkl_mean", nd_reps[0], _rows_ci(nd_reps), **where)
    return rank_frames


def _ranking_in_blocks(order, view, ks, target_dists, all_weights):
    per_resample = max(ks) * len(view.groups) + all_weights.shape[1]
    block = max(1, _RANKING_BLOCK // per_resample)
    skews, nds = [], []
    for start in range(0, all_weights.shape[0], block):
        s, d = M.ranking_metrics_weighted(order, view.codes, len(view.groups), ks, target_dists,
                                          all_weights[start : start + block])
        skews.append(s)
        nds.append(d)
    return np.concatenate(skews), np.concatenate(nds)


def _group_prompts(col, role, spec, image, text, views, all_weights, extra) -> None:
    by_name = {v.name: v for v in views}
    for gp in spec.group_prompts:
        v = by_name.get(gp.attribute)
        if v is None:
            col.skip(role, "group_prompt_preference", f"attribute {gp.attribute!r} is not in the data", attribute=gp.attribute)
            continue
        ref = v.reference if gp.reference is None or gp.reference not in v.groups else v.groups.index(gp.reference)
        if gp.reference is not None and gp.reference not in v.groups:
            col.skip(role, "weat_effect_size", f"reference group {gp.reference!r} has no images", attribute=v.name)
        n = image.shape[0]
        for concept in gp.concepts:
            label_text = gp.template.replace("{concept}", concept)
            prompt_vecs = np.stack([text[gp.prompt(g, concept)] for g in v.groups])
            sim = image @ prompt_vecs.T  # (N, G)
            own = (np.argmax(sim, axis=1) == v.codes).astype(np.float64)
            pref = M.group_rates_weighted(own, v.members, all_weights)
            for gi, g in enumerate(v.groups):
                status, note = col.size_status(int(v.sizes[gi]))
                col.add(role, "group_prompt_preference", pref[0, gi], _rows_ci(pref[:, gi]), attribute=v.name, group=g,
                        prompt=label_text, n=int(v.sizes[gi]), status=status, note=note)
            for gi, g in enumerate(v.groups):
                if gi == ref:
                    continue
                pair = f"{g} vs {v.groups[ref]}"
                s = sim[:, gi] - sim[:, ref]
                in_x, in_y = v.codes == gi, v.codes == ref
                effect = M.weat_effect_size(s, in_x, in_y)
                where = dict(attribute=v.name, group=pair, prompt=label_text, n=int(in_x.sum() + in_y.sum()))
                if math.isnan(effect):
                    col.skip(role, "weat_effect_size", "too few images or no variation in s", **where)
                    continue
                col.add(role, "weat_effect_size", effect, _rows_ci(_weat_weighted(s, in_x, in_y, all_weights)), **where)
                p = M.weat_permutation_p_value(s, in_x, in_y, n_perm=spec.bootstrap.n_perm, seed=spec.bootstrap.seed)
                col.add(role, "weat_p_value", p, None, **where)
                extra["weat_tests"].append({"model": role, "attribute": v.name, "group": pair, "prompt": label_text,
                                            "effect_size": effect, "p_value": p})


def _weat_weighted(s, in_x, in_y, weights) -> np.ndarray:
    """WEAT effect size per resample (rows of ``weights``) with the weighted sample std."""
    pooled = in_x | in_y
    wx, wy, wp = weights[:, in_x], weights[:, in_y], weights[:, pooled]
    mx = wx @ s[in_x] / wx.sum(axis=1)
    my = wy @ s[in_y] / wy.sum(axis=1)
    npool = wp.sum(axis=1)
    mean = wp @ s[pooled] / npool
    var = (wp @ (s[pooled] ** 2) - npool * mean**2) / (npool - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mx - my) / np.sqrt(np.maximum(var, 0))


def _harmful(col, role, spec, image, text, labels, class_problem, views, all_weights) -> None:
    if spec.harmful is None:
        return
    if class_problem:
        col.skip(role, "harmful_rate", f"the harmful-label probe mixes task classes with harmful labels, but {class_problem}",
                 group=schema.OVERALL)
        return
    class_templates = spec.classes.templates
    vecs = [ensemble([text[p] for p in spec.classes.prompts_for(c)]) for c in labels]
    vecs += [ensemble([text[p] for p in spec.harmful.prompts_for(h, class_templates)]) for h in spec.harmful.labels]
    label_set = list(labels) + list(spec.harmful.labels)
    harmful = np.array([False] * len(labels) + [True] * len(spec.harmful.labels))
    pred = np.argmax(image @ np.stack(vecs).T, axis=1)
    n = image.shape[0]
    columns = [("", harmful)] + [(h, np.array([x == h for x in label_set])) for h in spec.harmful.labels]
    for label, mask in columns:
        hit = mask[pred].astype(np.float64)
        overall = M.group_rates_weighted(hit, np.ones((n, 1)), all_weights)[:, 0]
        col.add(role, "harmful_rate", overall[0], _rows_ci(overall), group=schema.OVERALL, label=label, n=n)
        for v in views:
            rates = M.group_rates_weighted(hit, v.members, all_weights)
            for gi, g in enumerate(v.groups):
                status, note = col.size_status(int(v.sizes[gi]))
                col.add(role, "harmful_rate", rates[0, gi], _rows_ci(rates[:, gi]), attribute=v.name, group=g, label=label,
                        n=int(v.sizes[gi]), status=status, note=note)


def _deltas(col: _Collector, compare: tuple[str, str]) -> list[dict]:
    """Rows for second-minus-first with paired-bootstrap intervals; returns the delta tests."""
    first, second = compare
    by_key = {}
    for row in col.rows:
        if row["model"] in compare and row["metric"] != "weat_p_value":
            by_key.setdefault(col.key(row)[1:], {})[row["model"]] = row
    tests = []
    for key, pair in by_key.items():
        if first not in pair or second not in pair:
            continue
        a, b = pair[first], pair[second]
        where = {c: a[c] for c in ("attribute", "group", "label", "prompt", "k", "target")}
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
