"""Association skew family: which groups neutral prompts pull to the top of a ranking.

Per prompt, group, k and target: Skew@k, MaxSkew@k, MinSkew@k and NDKL (Geyik et al. 2019),
with their spread across prompts. One ranking per prompt serves every bootstrap resample
(:func:`workbench.audit.metrics.ranking_metrics_weighted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import schema
from workbench.audit.context import ModelContext, View, drop_point_row
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.metrics import rank_order, ranking_metrics_weighted, target_distribution

if TYPE_CHECKING:
    from workbench.audit.spec import AuditSpec

METRICS = (
    MetricInfo("skew", "ln(p_a(k) / p*_a) for one prompt and group", "abs_higher_is_worse"),
    MetricInfo("max_skew", "max over groups of skew (group '')", "higher_is_worse"),
    MetricInfo("min_skew", "min over groups of skew (group '')", "lower_is_worse"),
    MetricInfo("ndkl", "normalised discounted KL of the top-k group mix", "higher_is_worse"),
    MetricInfo("max_skew_mean", "mean over prompts of max_skew (prompt ALL_PROMPTS)", "higher_is_worse"),
    MetricInfo("max_skew_std", "standard deviation over prompts of max_skew (prompt ALL_PROMPTS)", "higher_is_worse"),
    MetricInfo("ndkl_mean", "mean over prompts of ndkl (prompt ALL_PROMPTS)", "higher_is_worse"),
)

# Bound on the (resamples x k x groups) block the ranking bootstrap holds at once.
_RANKING_BLOCK = 20_000_000


def skew_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    return list(spec.skew.prompts) if spec.skew else []


def compute(ctx: ModelContext) -> None:
    spec, col, role = ctx.spec, ctx.collector, ctx.role
    if not spec.skew:
        return
    n = ctx.n
    ks_ok = [k for k in spec.skew.k if k < n]
    for k in spec.skew.k:
        if k >= n:
            reason = (f"k={k} is not smaller than the number of images ({n}); at k=N skew only reflects the data's "
                      "make-up, so pick a smaller k")
            ctx.warnings.append(reason)
            for v in ctx.views:
                col.skip(role, "max_skew", reason, attribute=v.name, k=k, prompt=schema.ALL_PROMPTS)
    targets = list(spec.skew.targets)
    usable = [v for v in ctx.views if len(v.groups) >= 2]
    for v in ctx.views:
        if len(v.groups) < 2:
            col.skip(role, "max_skew", f"{v.name!r} has fewer than two groups with images", attribute=v.name)
    kmax = max(ks_ok) if ks_ok else 0
    # per (view, k, target): (P, B+1) max_skew and ndkl for the aggregates over prompts
    agg_max: dict[tuple, list[np.ndarray]] = {}
    agg_nd: dict[tuple, list[np.ndarray]] = {}
    row_ids = ctx.table["row"].to_numpy() if "row" in ctx.table.columns else np.arange(n)
    for prompt in spec.skew.prompts:
        scores = ctx.image @ ctx.text[prompt]
        order = rank_order(scores)
        if kmax:
            top = order[:kmax]
            frame = pd.DataFrame({"model": role, "prompt": prompt, "rank": np.arange(1, kmax + 1),
                                  "row": row_ids[top], "score": scores[top].astype(np.float64)})
            for gcol in ctx.group_columns:
                frame[gcol] = ctx.table[gcol].astype(str).to_numpy()[top]
            col.rankings.append(frame)
        if not ks_ok:
            continue
        for v in usable:
            target_dists = [target_distribution(v.codes, len(v.groups), t) for t in targets]
            skew, nd = _ranking_in_blocks(order, v, ks_ok, target_dists, ctx.weights)
            counts_top = {k: np.bincount(v.codes[order[:k]], minlength=len(v.groups)) for k in ks_ok}
            for ki, k in enumerate(ks_ok):
                for ti, t in enumerate(targets):
                    where = dict(attribute=v.name, prompt=prompt, k=k, target=t)
                    for gi, g in enumerate(v.groups):
                        absent = counts_top[k][gi] == 0
                        note = "absent from the top k; share counted as 1/k" if absent else ""
                        col.add(role, "skew", skew[0, ki, ti, gi], drop_point_row(skew[:, ki, ti, gi]), group=g,
                                n=int(v.sizes[gi]), note=note, **where)
                    mx = np.nanmax(skew[:, ki, ti, :], axis=1)
                    mn = np.nanmin(skew[:, ki, ti, :], axis=1)
                    col.add(role, "max_skew", mx[0], drop_point_row(mx), n=k, **where)
                    col.add(role, "min_skew", mn[0], drop_point_row(mn), n=k, **where)
                    col.add(role, "ndkl", nd[0, ki, ti], drop_point_row(nd[:, ki, ti]), n=k, **where)
                    agg_max.setdefault((v.name, k, t), []).append(mx)
                    agg_nd.setdefault((v.name, k, t), []).append(nd[:, ki, ti])
    for (name, k, t), series in agg_max.items():
        mx = np.stack(series)  # (P, B+1)
        nd = np.stack(agg_nd[(name, k, t)])
        where = dict(attribute=name, prompt=schema.ALL_PROMPTS, k=k, target=t, n=k)
        mean_reps, std_reps, nd_reps = mx.mean(axis=0), mx.std(axis=0), nd.mean(axis=0)
        col.add(role, "max_skew_mean", mean_reps[0], drop_point_row(mean_reps), **where)
        col.add(role, "max_skew_std", std_reps[0], drop_point_row(std_reps), **where)
        col.add(role, "ndkl_mean", nd_reps[0], drop_point_row(nd_reps), **where)


def _ranking_in_blocks(order: np.ndarray, view: View, ks: list[int], target_dists: list[np.ndarray],
                       weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ranking_metrics_weighted` over blocks of resamples, so memory stays bounded."""
    per_resample = max(ks) * len(view.groups) + weights.shape[1]
    block = max(1, _RANKING_BLOCK // per_resample)
    skews, nds = [], []
    for start in range(0, weights.shape[0], block):
        s, d = ranking_metrics_weighted(order, view.codes, len(view.groups), ks, target_dists, weights[start : start + block])
        skews.append(s)
        nds.append(d)
    return np.concatenate(skews), np.concatenate(nds)


FAMILY = Family(name="skew", metrics=METRICS, prompts=skew_prompts, compute=compute)
