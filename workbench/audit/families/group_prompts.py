"""Group-prompt family: do images sit closer to prompts naming their own group (WEAT-style)?

For each concept, the prompts "a {concept} lesion on {group} skin" differ only in the
group term. Reported: the share of each group's images whose nearest of those prompts is
their own group's, and the cross-modal WEAT effect size of each group against the
reference group with a permutation p-value (group sizes fixed). The preference is a share
of images, so its interval is the Wilson score interval; the effect size's is the bootstrap's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench.audit.context import ModelContext, drop_point_row
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.intervals import wilson_interval
from workbench.audit.metrics import group_rates_weighted, weat_effect_size, weat_permutation_p_value

if TYPE_CHECKING:
    from workbench.audit.spec import AuditSpec

METRICS = (
    MetricInfo("group_prompt_preference", "share of a group's images closer to its own group prompt", "lower_is_worse",
               "share"),
    MetricInfo("weat_effect_size", "cross-modal WEAT effect size for a concept (group pair in `group`)", "abs_higher_is_worse"),
    MetricInfo("weat_p_value", "permutation p-value of the effect size (fixed group sizes)", None),
)

# ModelContext.tests key of the WEAT permutation tests (Holm-adjusted together in the summary).
TESTS = "weat"


def listed_group_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    """Prompts for the groups the audit lists (and the wording terms it gives)."""
    out: list[str] = []
    for gp in spec.group_prompts:
        groups = list(spec.attribute(gp.attribute).groups or []) + list(gp.terms)
        for concept in gp.concepts:
            out.extend(gp.prompt(g, concept) for g in groups)
    return out


def data_group_prompts(spec: AuditSpec, table: pd.DataFrame) -> list[str]:
    """Group-prompt texts for group values found in the data but not listed in the spec."""
    out: list[str] = []
    for gp in spec.group_prompts:
        if gp.attribute in table.columns:
            for g in sorted(set(table[gp.attribute].astype(str))):
                out.extend(gp.prompt(g, c) for c in gp.concepts)
    return list(dict.fromkeys(out))


def compute(ctx: ModelContext) -> None:
    role, col, spec = ctx.role, ctx.collector, ctx.spec
    tests = ctx.tests.setdefault(TESTS, [])
    by_name = {v.name: v for v in ctx.views}
    for gp in spec.group_prompts:
        v = by_name.get(gp.attribute)
        if v is None:
            col.skip(role, "group_prompt_preference", f"attribute {gp.attribute!r} is not in the data", attribute=gp.attribute)
            continue
        ref = v.reference if gp.reference is None or gp.reference not in v.groups else v.groups.index(gp.reference)
        if gp.reference is not None and gp.reference not in v.groups:
            col.skip(role, "weat_effect_size", f"reference group {gp.reference!r} has no images", attribute=v.name)
        for concept in gp.concepts:
            label_text = gp.template.replace("{concept}", concept)
            prompt_vecs = np.stack([ctx.text[gp.prompt(g, concept)] for g in v.groups])
            sim = ctx.image @ prompt_vecs.T  # (N, G)
            own = (np.argmax(sim, axis=1) == v.codes).astype(np.float64)
            pref = group_rates_weighted(own, v.members, ctx.weights)
            low, high = wilson_interval(np.rint(own @ v.members), v.sizes, spec.bootstrap.level)
            for gi, g in enumerate(v.groups):
                status, note = col.size_status(int(v.sizes[gi]))
                col.add(role, "group_prompt_preference", pref[0, gi], drop_point_row(pref[:, gi]), attribute=v.name,
                        group=g, prompt=label_text, n=int(v.sizes[gi]), status=status, note=note,
                        interval=(low[gi], high[gi]))
            for gi, g in enumerate(v.groups):
                if gi == ref:
                    continue
                pair = f"{g} vs {v.groups[ref]}"
                s = sim[:, gi] - sim[:, ref]
                in_x, in_y = v.codes == gi, v.codes == ref
                effect = weat_effect_size(s, in_x, in_y)
                where = dict(attribute=v.name, group=pair, prompt=label_text, n=int(in_x.sum() + in_y.sum()))
                if math.isnan(effect):
                    col.skip(role, "weat_effect_size", "too few images or no variation in s", **where)
                    continue
                col.add(role, "weat_effect_size", effect, drop_point_row(_weat_weighted(s, in_x, in_y, ctx.weights)),
                        **where)
                p = weat_permutation_p_value(s, in_x, in_y, n_perm=spec.bootstrap.n_perm, seed=spec.bootstrap.seed)
                col.add(role, "weat_p_value", p, None, **where)
                tests.append({"model": role, "attribute": v.name, "group": pair, "prompt": label_text,
                              "effect_size": effect, "p_value": p})


def _weat_weighted(s: np.ndarray, in_x: np.ndarray, in_y: np.ndarray, weights: np.ndarray) -> np.ndarray:
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


FAMILY = Family(name="group_prompts", metrics=METRICS, prompts=listed_group_prompts, compute=compute,
                data_prompts=data_group_prompts)
