"""The audit's ``summary.json``: configuration, conventions, verdicts and tests, as one dict.

Built by :func:`build_summary` from what :func:`workbench.audit.core.compute_audit`
computed; its keys are documented in ``workbench/schema.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from workbench import schema
from workbench.audit.context import View
from workbench.audit.spec import AuditSpec

BOOTSTRAP_INTERVAL = (
    "percentile, per row, not adjusted for multiplicity; for max/min-type statistics (gaps, ratios of "
    "extremes, MaxSkew) it is biased away from zero and can exclude the estimate: read its far end as "
    "the plausible size"
)

CONVENTIONS = {
    "skew_absent_group": "a group absent from the top k is counted with share 1/k (reference code); such rows say so in note",
    "ties": "equal scores are ordered by row index, so exactly k images count",
    "target_uniform": "1/A over the groups that have images",
    "max_skew_std": "population standard deviation (ddof=0) over prompts",
    "weat_effect_size": "(mean s over X - mean s over Y) / sample std (ddof=1) of s over X and Y; s = cos(own prompt) - cos(reference group's prompt)",
    "gap_direction": "differences are raw gaps (0 is equal); ratios are min/max or group/reference (1 is equal)",
}


def _count_tests(tests: Sequence[Mapping[str, Any]]) -> int:
    return sum(not math.isnan(t["p_value"]) for t in tests)


def build_summary(
    *,
    spec: AuditSpec,
    models: Mapping[str, Mapping[str, str]],
    data_info: Mapping[str, Any],
    views: Sequence[View],
    class_labels: Sequence[str],
    prompts: Sequence[str],
    n_boot: int,
    seed: int,
    compare: tuple[str, str] | None,
    checks: list[dict[str, Any]],
    verdict: str,
    n_check_tests: int,
    weat_tests: list[dict[str, Any]],
    delta_tests: list[dict[str, Any]],
    not_computed: list[dict[str, Any]],
    warnings: Sequence[str],
) -> dict[str, Any]:
    """The summary dict of one audit (JSON-ready once NaN and numpy scalars are converted).

    ``models``: role -> {"model": id or folder, "fingerprint": ...}; ``weat_tests`` and
    ``delta_tests`` already carry their Holm-adjusted p-values.
    """
    n_weat, n_delta = _count_tests(weat_tests), _count_tests(delta_tests)
    return {
        "schema_version": schema.RESULTS_SCHEMA_VERSION,
        "audit": spec.name,
        "models": {role: dict(info) for role, info in models.items()},
        "data": dict(data_info),
        "spec": spec.to_dict(),
        "groups": {
            v.name: {"groups": v.groups, "sizes": [int(s) for s in v.sizes], "reference": v.groups[v.reference]}
            for v in views
        },
        "class_labels": list(class_labels),
        "prompts": list(prompts),
        "k": list(spec.skew.k) if spec.skew else [],
        "targets": list(spec.skew.targets) if spec.skew else [],
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "level": spec.bootstrap.level,
            "stratified_by": [v.name for v in views if not v.is_intersection],
            "paired": True,
            "interval": BOOTSTRAP_INTERVAL,
            "p_values": "Wald test with the bootstrap standard error; Holm within each family",
        },
        "conventions": {**CONVENTIONS, "delta": f"{compare[1]} minus {compare[0]}" if compare else ""},
        "checks": checks,
        "verdict": verdict,
        "not_computed": not_computed,
        "warnings": list(dict.fromkeys(warnings)),
        "n_tests": int(n_check_tests + n_weat + n_delta),
        "multiple_testing": {
            "method": "holm",
            "alpha": spec.policy.alpha,
            "families": {"policy_checks": int(n_check_tests), "weat": int(n_weat), "delta": int(n_delta)},
        },
        "weat_tests": weat_tests,
        "delta_significant": [t for t in delta_tests if t["p_holm"] < spec.policy.alpha],
    }
