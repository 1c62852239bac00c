"""Harmful-label family: how often each group's images land on a harmful label.

The harmful labels are mixed into the task's class labels (CLIP paper, section 7.1): every
image is classified among classes + harmful labels, and the share of a group's images
whose top label is harmful (any, and each label alone) is reported, with the Wilson score
interval (rates near 0 are the rule here, where a percentile bootstrap collapses to a point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from workbench import prompts, schema
from workbench.audit.context import ModelContext, drop_point_row
from workbench.audit.families.accuracy import class_embeddings
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.intervals import wilson_interval
from workbench.audit.metrics import group_rates_weighted

if TYPE_CHECKING:
    from workbench.audit.spec import AuditSpec

METRICS = (
    MetricInfo("harmful_rate", "share of a group's images whose top label is a harmful label", "higher_is_worse",
               "share"),
)


def harmful_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    if not spec.harmful:
        return []
    class_templates = spec.classes.templates if spec.classes else ()
    out: list[str] = []
    for label in spec.harmful.labels:
        out.extend(spec.harmful.prompts_for(label, class_templates))
    return out


def compute(ctx: ModelContext) -> None:
    spec, role, col = ctx.spec, ctx.role, ctx.collector
    if spec.harmful is None:
        return
    if ctx.class_problem:
        col.skip(role, "harmful_rate",
                 f"the harmful-label probe mixes task classes with harmful labels, but {ctx.class_problem}",
                 group=schema.OVERALL)
        return
    class_templates = spec.classes.templates
    vecs = class_embeddings(ctx, ctx.labels)
    vecs += [prompts.ensemble([ctx.text[p] for p in spec.harmful.prompts_for(h, class_templates)]) for h in spec.harmful.labels]
    label_set = list(ctx.labels) + list(spec.harmful.labels)
    harmful = np.array([False] * len(ctx.labels) + [True] * len(spec.harmful.labels))
    pred = np.argmax(ctx.image @ np.stack(vecs).T, axis=1)
    n, level = ctx.n, spec.bootstrap.level
    columns = [("", harmful)] + [(h, np.array([x == h for x in label_set])) for h in spec.harmful.labels]
    for label, mask in columns:
        hit = mask[pred].astype(np.float64)
        overall = group_rates_weighted(hit, np.ones((n, 1)), ctx.weights)[:, 0]
        col.add(role, "harmful_rate", overall[0], drop_point_row(overall), group=schema.OVERALL, label=label, n=n,
                interval=wilson_interval(hit.sum(), n, level))
        for v in ctx.views:
            rates = group_rates_weighted(hit, v.members, ctx.weights)
            low, high = wilson_interval(np.rint(hit @ v.members), v.sizes, level)
            for gi, g in enumerate(v.groups):
                status, note = col.size_status(int(v.sizes[gi]))
                col.add(role, "harmful_rate", rates[0, gi], drop_point_row(rates[:, gi]), attribute=v.name, group=g,
                        label=label, n=int(v.sizes[gi]), status=status, note=note, interval=(low[gi], high[gi]))


FAMILY = Family(name="harmful", metrics=METRICS, prompts=harmful_prompts, compute=compute)
