"""Association skew family: which groups neutral prompts pull to the top of a ranking.

Per prompt, group, k and target: Skew@k, MaxSkew@k, MinSkew@k and NDKL (Geyik et al. 2019),
with their spread across prompts. One ranking per prompt serves every bootstrap resample
(:func:`workbench.audit.metrics.ranking_metrics_weighted`).

Prompt-specific association. A model that ranks images by a group cue whatever the prompt
gives every prompt skew, so a concept prompt's skew alone cannot say whether the *concept*
is associated with a group. The same skew is computed for a panel of control prompts that
name nothing related to any attribute (``workbench/audit/controls.py``):

- ``specific_skew``: the prompt's Skew@k minus the mean Skew@k of the controls (same model,
  k, target, group). Inside each image resample the controls are resampled too
  (:func:`workbench.audit.bootstrap.control_resample_weights`), so its interval covers both
  the image noise and the choice of controls. ``specific_max_skew`` is its maximum over
  groups (the row's group is the group attaining it): the concept checks use it.
- ``control_max_skew_mean``: the controls' mean MaxSkew@k, the baseline itself.
- ``group_dominance``: the share of control prompts whose Skew@k interval excludes 0 for
  some group, each at level 1 - (1 - level) / A (Bonferroni over the A groups, so a model
  that does not rank by group flags about 1 - level of its controls). Its interval is the
  Wilson score interval over the C controls; its replicates (for the policy's p-value)
  resample the controls. The row's group is the group most often significantly ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import schema
from workbench.audit.bootstrap import percentile_interval
from workbench.audit.context import ModelContext, View, drop_point_row
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.intervals import wilson_interval
from workbench.audit.metrics import rank_order, ranking_metrics_views, target_distribution

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
    MetricInfo("specific_skew", "skew of a prompt minus the mean skew of the control prompts (same model, k, target, group)",
               "abs_higher_is_worse"),
    MetricInfo("specific_max_skew", "max over groups of specific_skew (group: the group attaining it)", "higher_is_worse",
               group_attains=True),
    MetricInfo("control_max_skew_mean", "mean over the control prompts of max_skew (prompt CONTROL_PANEL)",
               "higher_is_worse"),
    MetricInfo("group_dominance", "share of control prompts whose skew interval excludes 0 for some group "
               "(prompt CONTROL_PANEL; group: the group most often ahead)", "higher_is_worse", "share",
               group_attains=True),
)

# Bound on the (resamples x k x groups) block the ranking bootstrap holds at once.
_RANKING_BLOCK = 20_000_000


def skew_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    """The concept prompts, then the control prompts (every one is encoded with the others)."""
    return list(spec.skew.prompts) + list(spec.skew.controls) if spec.skew else []


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
    ranking_views = _ranking_views(usable, targets)
    controls, no_controls = _control_skews(ctx, usable, ranking_views, ks_ok)
    if no_controls:
        for v in usable:
            for k in ks_ok:
                for t in targets:
                    col.skip(role, "specific_max_skew", no_controls, attribute=v.name, k=k, target=t)
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
        for v, (skew, nd) in zip(usable, _ranking_in_blocks(order, ranking_views, ks_ok, ctx.weights)):
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
                    if v.name in controls:
                        _add_specific(ctx, v, skew[:, ki, ti, :], controls[v.name].mean[:, ki, ti, :], where)
    for (name, k, t), series in agg_max.items():
        mx = np.stack(series)  # (P, B+1)
        nd = np.stack(agg_nd[(name, k, t)])
        where = dict(attribute=name, prompt=schema.ALL_PROMPTS, k=k, target=t, n=k)
        mean_reps, std_reps, nd_reps = mx.mean(axis=0), mx.std(axis=0), nd.mean(axis=0)
        col.add(role, "max_skew_mean", mean_reps[0], drop_point_row(mean_reps), **where)
        col.add(role, "max_skew_std", std_reps[0], drop_point_row(std_reps), **where)
        col.add(role, "ndkl_mean", nd_reps[0], drop_point_row(nd_reps), **where)
    for v in usable:
        if v.name in controls:
            for ki, k in enumerate(ks_ok):
                for ti, t in enumerate(targets):
                    _add_control_rows(ctx, v, controls[v.name], ki, k, ti, t)


@dataclass
class _ControlSkews:
    """Skew of every control prompt for one view, and its mean over resampled control panels."""

    skew: np.ndarray  # (C, B+1, K, T, G)
    mean: np.ndarray  # (B+1, K, T, G): row b = mean over the controls drawn in resample b


def _control_skews(ctx: ModelContext, usable: list[View], ranking_views: RankingViews,
                   ks: list[int]) -> tuple[dict[str, _ControlSkews], str]:
    """Per view: the control prompts' skew. Returns ({view name: skews}, why not computed)."""
    controls = list(ctx.spec.skew.controls)
    if not ks or not usable:
        return {}, ""
    if not controls or ctx.control_weights is None:
        return {}, "the audit has no control prompts (skew.controls), so skew relative to them is undefined"
    missing = [c for c in controls if c not in ctx.text]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return {}, (f"no text embedding for control prompt(s) {shown}; encode every prompt of "
                    "workbench.audit.core.prompts_needed")
    # per control prompt, per view: skew (B+1, K, T, G)
    per_control = [_ranking_in_blocks(rank_order(ctx.image @ ctx.text[c]), ranking_views, ks, ctx.weights,
                                      with_ndkl=False) for c in controls]
    out: dict[str, _ControlSkews] = {}
    for vi, v in enumerate(usable):
        skew = np.stack([views[vi][0] for views in per_control])
        mean = np.einsum("bc,cbktg->bktg", ctx.control_weights.astype(np.float64), skew) / len(controls)
        out[v.name] = _ControlSkews(skew, mean)
    return out, ""


def _add_specific(ctx: ModelContext, v: View, skew: np.ndarray, control_mean: np.ndarray, where: dict) -> None:
    """specific_skew per group and specific_max_skew for one prompt, k and target; arrays (B+1, G)."""
    specific = skew - control_mean
    for gi, g in enumerate(v.groups):
        ctx.collector.add(ctx.role, "specific_skew", specific[0, gi], drop_point_row(specific[:, gi]), group=g,
                          n=int(v.sizes[gi]), **where)
    highest = np.nanmax(specific, axis=1)
    ahead = v.groups[int(np.nanargmax(specific[0]))]
    ctx.collector.add(ctx.role, "specific_max_skew", highest[0], drop_point_row(highest), group=ahead, n=where["k"],
                      **where)


def _add_control_rows(ctx: ModelContext, v: View, controls: _ControlSkews, ki: int, k: int, ti: int, t: str) -> None:
    """control_max_skew_mean and group_dominance of one view, k and target."""
    col, weights = ctx.collector, ctx.control_weights.astype(np.float64)
    n_controls, n_groups = controls.skew.shape[0], len(v.groups)
    where = dict(attribute=v.name, prompt=schema.CONTROL_PANEL, k=k, target=t)
    per_control = controls.skew[:, :, ki, ti, :]  # (C, B+1, G)
    max_skew = np.nanmax(per_control, axis=2)  # (C, B+1)
    mean = (weights * max_skew.T).sum(axis=1) / n_controls
    col.add(ctx.role, "control_max_skew_mean", mean[0], drop_point_row(mean), n=k, **where)
    # Is a control's skew significantly away from 0 for some group? Bonferroni over the groups.
    level = 1.0 - (1.0 - ctx.spec.bootstrap.level) / n_groups
    reps = np.moveaxis(per_control[:, 1:, :], 1, 0).reshape(per_control.shape[1] - 1, -1)  # (B, C*G)
    low, high = (x.reshape(n_controls, n_groups) for x in percentile_interval(reps, level))
    ahead, behind = low > 0, high < 0
    significant = (ahead | behind).any(axis=1)  # (C,)
    count = int(significant.sum())
    share = (weights @ significant.astype(np.float64)) / n_controls  # row b: share among the controls drawn
    leader = ""
    if ahead.any():
        leader = v.groups[int(np.argmax(ahead.sum(axis=0)))]
    col.add(ctx.role, "group_dominance", count / n_controls, drop_point_row(share), group=leader, n=n_controls,
            interval=wilson_interval(count, n_controls, ctx.spec.bootstrap.level), **where)


RankingViews = list[tuple[np.ndarray, int, list[np.ndarray]]]  # per view: (codes, groups, target shares)


def _ranking_views(views: list[View], targets: list[str]) -> RankingViews:
    """What :func:`ranking_metrics_views` needs of each view, built once for every prompt."""
    return [(v.codes, len(v.groups), [target_distribution(v.codes, len(v.groups), t) for t in targets]) for v in views]


def _ranking_in_blocks(order: np.ndarray, views: RankingViews, ks: list[int], weights: np.ndarray, *,
                       with_ndkl: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`ranking_metrics_views` for every view over blocks of resamples, so memory stays bounded.

    Returns (skew, ndkl) per view; the controls need skew only (``with_ndkl=False``).
    """
    per_resample = max(ks) * sum(groups for _, groups, _ in views) + weights.shape[1]
    block = max(1, _RANKING_BLOCK // per_resample)
    parts = [ranking_metrics_views(order, views, ks, weights[start : start + block], with_ndkl=with_ndkl)
             for start in range(0, weights.shape[0], block)]
    return [(np.concatenate([p[i][0] for p in parts]), np.concatenate([p[i][1] for p in parts]))
            for i in range(len(views))]


FAMILY = Family(name="skew", metrics=METRICS, prompts=skew_prompts, compute=compute)
