"""Zero-shot accuracy family: accuracy per group and class, gaps and ratios, parity views.

Class embeddings are prompt ensembles (``workbench.prompts.ensemble``); point estimates and
group counts come from fairlearn's ``MetricFrame``. Intervals: a proportion (accuracy of a
group or class) gets the Wilson score interval and a difference of two groups' accuracies
Newcombe's hybrid score interval (``workbench.audit.intervals``), which keep their coverage
at 0% and 100% where a percentile bootstrap collapses to a point; every other row gets the
percentile interval of the shared bootstrap resamples. Every row keeps its bootstrap
replicates, for the policy's p-values and for paired model-minus-model deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import prompts, schema
from workbench.audit.context import ModelContext, drop_point_row
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.intervals import newcombe_interval, wilson_interval
from workbench.audit.metrics import dp_eo_weighted, group_rates_weighted

if TYPE_CHECKING:
    from workbench.audit.spec import AuditSpec

METRICS = (
    MetricInfo("accuracy", "zero-shot top-1 accuracy (overall row has group OVERALL)", "lower_is_worse", "share"),
    MetricInfo("accuracy_difference", "group accuracy minus the reference group's accuracy", "lower_is_worse", "share"),
    MetricInfo("accuracy_ratio", "group accuracy divided by the reference group's accuracy", "lower_is_worse"),
    MetricInfo("accuracy_gap", "max minus min group accuracy within an attribute (group '')", "higher_is_worse",
               "share"),
    MetricInfo("accuracy_min_ratio", "min over max group accuracy within an attribute (group '')", "lower_is_worse"),
    MetricInfo("class_accuracy", "per-class recall, per group when group is set", "lower_is_worse", "share"),
    MetricInfo("demographic_parity_difference", "one-vs-rest for class `label`, per attribute", "higher_is_worse", "share"),
    MetricInfo("equalized_odds_difference", "one-vs-rest for class `label`, per attribute", "higher_is_worse", "share"),
)


def class_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    """The prompts of every class, class by class."""
    if not spec.classes:
        return []
    out: list[str] = []
    for label in list(spec.classes.labels or class_labels or []):
        out.extend(spec.classes.prompts_for(label))
    return out


def class_embeddings(ctx: ModelContext, labels: Sequence[str]) -> list[np.ndarray]:
    """One ensembled text embedding per class label."""
    return [prompts.ensemble([ctx.text[p] for p in ctx.spec.classes.prompts_for(c)]) for c in labels]


def compute(ctx: ModelContext) -> None:
    role, col, labels, weights = ctx.role, ctx.collector, ctx.labels, ctx.weights
    n = len(ctx.table)
    problem = ctx.label_problem or ctx.class_problem
    if problem:
        col.skip(role, "accuracy", problem, group=schema.OVERALL)
        return
    # Imported here: fairlearn pulls in scikit-learn, which importing workbench.audit should not need.
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    class_emb = np.stack(class_embeddings(ctx, labels))
    pred = np.argmax(ctx.image @ class_emb.T, axis=1)
    index = {c: i for i, c in enumerate(labels)}
    truth = np.array([index[c] for c in ctx.table["label"].astype(str)])
    hits = (pred == truth).astype(np.float64)
    # Per-image predictions feed confusion matrices in the dashboard (never recomputed there).
    per_image = pd.DataFrame({"model": role, "row": ctx.table["row"].to_numpy(),
                              "label": ctx.table["label"].astype(str).to_numpy(),
                              "predicted": np.asarray(labels, dtype=object)[pred]})
    for v in ctx.views:
        if not v.is_intersection:
            per_image[v.name] = np.asarray(v.groups, dtype=object)[v.codes]
    col.predictions.append(per_image)
    level = ctx.spec.bootstrap.level
    overall = group_rates_weighted(hits, np.ones((n, 1)), weights)[:, 0]
    col.add(role, "accuracy", overall[0], drop_point_row(overall), group=schema.OVERALL, n=n,
            interval=wilson_interval(hits.sum(), n, level))
    class_members = np.eye(len(labels))[truth]
    per_class = group_rates_weighted(hits, class_members, weights)
    class_sizes = class_members.sum(axis=0).astype(int)
    class_low, class_high = wilson_interval(_successes(hits, class_members), class_sizes, level)
    for ci, c in enumerate(labels):
        if class_sizes[ci] == 0:
            col.skip(role, "class_accuracy", f"no images of class {c!r}", group=schema.OVERALL, label=c)
        else:
            col.add(role, "class_accuracy", per_class[0, ci], drop_point_row(per_class[:, ci]), group=schema.OVERALL,
                    label=c, n=class_sizes[ci], interval=(class_low[ci], class_high[ci]))

    for v in ctx.views:
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
        rates = group_rates_weighted(hits, v.members, weights)  # (B+1, G)
        ref = v.reference
        small = [g for g, s in zip(v.groups, v.sizes) if s < ctx.spec.min_group_size]
        correct = _successes(hits, v.members)
        acc_low, acc_high = wilson_interval(correct, v.sizes, level)
        diff_low, diff_high = newcombe_interval(correct, v.sizes, correct[ref], v.sizes[ref], level)
        for gi, g in enumerate(v.groups):
            size = int(by_group.loc[g, "count"])
            status, note = col.size_status(size)
            acc = float(by_group.loc[g, "accuracy"])
            col.add(role, "accuracy", acc, drop_point_row(rates[:, gi]), attribute=v.name, group=g, n=size, status=status,
                    note=note, interval=(acc_low[gi], acc_high[gi]))
            if gi != ref:
                col.add(role, "accuracy_difference", acc - float(by_group.loc[v.groups[ref], "accuracy"]),
                        drop_point_row(rates[:, gi] - rates[:, ref]), attribute=v.name, group=g, n=size, status=status,
                        note=note, interval=(diff_low[gi], diff_high[gi]))
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio_reps = rates[:, gi] / rates[:, ref]
                ref_acc = float(by_group.loc[v.groups[ref], "accuracy"])
                col.add(role, "accuracy_ratio", acc / ref_acc if ref_acc > 0 else float("nan"),
                        drop_point_row(ratio_reps), attribute=v.name, group=g, n=size, status=status, note=note)
        agg_status, agg_note = ("small_group", f"groups below min_group_size: {small}") if small else ("ok", "")
        if len(v.groups) < 2:
            col.skip(role, "accuracy_gap", f"{v.name!r} has fewer than two groups with images", attribute=v.name)
        else:
            gap_reps = rates.max(axis=1) - rates.min(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_reps = rates.min(axis=1) / rates.max(axis=1)
            col.add(role, "accuracy_gap", float(mf.difference(method="between_groups")["accuracy"]),
                    drop_point_row(gap_reps), attribute=v.name, n=n, status=agg_status, note=agg_note)
            col.add(role, "accuracy_min_ratio", float(mf.ratio(method="between_groups")["accuracy"]),
                    drop_point_row(ratio_reps), attribute=v.name, n=n, status=agg_status, note=agg_note)

        # Per class within each group, and one-vs-rest parity views per class.
        cell = v.members[:, :, None] * class_members[:, None, :]  # (N, G, C)
        cell_rates = group_rates_weighted(hits, cell.reshape(n, -1), weights).reshape(-1, len(v.groups), len(labels))
        cell_sizes = cell.sum(axis=0).astype(int)
        cell_low, cell_high = wilson_interval(_successes(hits, cell.reshape(n, -1)).reshape(cell_sizes.shape), cell_sizes,
                                              level)
        for gi, g in enumerate(v.groups):
            for ci, c in enumerate(labels):
                if cell_sizes[gi, ci] == 0:
                    col.skip(role, "class_accuracy", f"no images of class {c!r} in group {g!r}", attribute=v.name,
                             group=g, label=c)
                    continue
                status, note = col.size_status(int(cell_sizes[gi, ci]))
                col.add(role, "class_accuracy", cell_rates[0, gi, ci], drop_point_row(cell_rates[:, gi, ci]),
                        attribute=v.name, group=g, label=c, n=int(cell_sizes[gi, ci]), status=status, note=note,
                        interval=(cell_low[gi, ci], cell_high[gi, ci]))
        if len(v.groups) < 2:
            continue
        for ci, c in enumerate(labels):
            yt, yp = truth == ci, pred == ci
            dp, eo = dp_eo_weighted(yt, yp, v.codes, len(v.groups), weights)
            col.add(role, "demographic_parity_difference", dp[0], drop_point_row(dp), attribute=v.name, label=c, n=n,
                    status=agg_status, note=agg_note)
            if np.isnan(eo[0]):
                lacking = [g for gi, g in enumerate(v.groups) if cell_sizes[gi, ci] in (0, v.sizes[gi])]
                col.skip(role, "equalized_odds_difference",
                         f"groups {lacking} have no images of class {c!r} or only such images, so a rate is undefined",
                         attribute=v.name, label=c)
            else:
                col.add(role, "equalized_odds_difference", eo[0], drop_point_row(eo), attribute=v.name, label=c, n=n,
                        status=agg_status, note=agg_note)


def _successes(hits: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Number of hits in each column of the 0/1 membership matrix (exact integers)."""
    return np.rint(np.asarray(hits, dtype=np.float64) @ np.asarray(members, dtype=np.float64))


FAMILY = Family(name="accuracy", metrics=METRICS, prompts=class_prompts, compute=compute)
