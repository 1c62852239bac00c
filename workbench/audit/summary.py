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
from workbench.audit.policy import Judgement
from workbench.audit.spec import AuditSpec
from workbench.audit.verdict import VerdictText

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
    "intervals": {
        "accuracy": "Wilson score interval (Brown-Cai-DasGupta edge modification) for the share of correct images",
        "class_accuracy": "Wilson score interval",
        "accuracy_difference": "Newcombe (1998) hybrid score interval for a difference of two independent proportions",
        "harmful_rate": "Wilson score interval",
        "group_prompt_preference": "Wilson score interval",
        "group_dominance": "Wilson score interval over the control prompts",
        "retrieval_recall": "Wilson score interval over the group's query pairs",
        "retrieval_recall_difference": "Newcombe (1998) hybrid score interval",
        "specific_skew": "percentile bootstrap; inside each image resample the control prompts are resampled too",
        "delta": "percentile bootstrap of the paired difference (same image and control resamples for both models)",
        "other": "percentile bootstrap of the stratified image resamples",
    },
    "p_values": (
        "policy checks: one-sided Wald test against the warn threshold with the bootstrap standard error (for "
        "Wilson/Newcombe rows too; for group_dominance the control prompts are resampled), Holm over the "
        "candidate's checks; the reference's checks form their own Holm family"
    ),
    "zero_width_interval": "a check never passes on an interval of zero width (resampling shows no uncertainty); it is inconclusive",
    "specific_skew": (
        "Skew@k of a prompt minus the mean Skew@k of the control prompts (same model, k, target, group); "
        "specific_max_skew is its maximum over groups, its group column the group attaining it"
    ),
    "group_dominance": (
        "share of control prompts whose Skew@k percentile interval at level 1-(1-level)/A excludes 0 for some "
        "of the A groups (Bonferroni over groups); its group column the group most often significantly ahead"
    ),
    "retrieval": (
        "each image-caption row is a query pair in both directions; the gallery is the whole split (distinct caption "
        "texts for image-to-text, every image for text-to-image, images sharing the query's caption text count as "
        "hits, not competitors); ranks start at 1 and a tie counts against the query; a group's rows are its queries"
    ),
    "auc": (
        "one-vs-rest AUC per class from the softmax over classes of 100 x cosine similarity (ranked through its "
        "logarithm, so confident scores do not tie); es_auc = AUC / (1 + sum over groups |AUC_g - AUC|) (Luo et al. 2024)"
    ),
    "candidate": "the verdict judges the candidate only; the reference's checks are context and never decide it",
    "domain_check": (
        "candidate minus reference overall zero-shot accuracy: pass when its paired interval lies above 0, "
        "inconclusive when it reaches 0, warn when the estimate is below 0, fail when significantly below"
    ),
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
    candidate: str,
    reference: str | None,
    judgement: Judgement,
    verdict: VerdictText,
    weat_tests: list[dict[str, Any]],
    delta_tests: list[dict[str, Any]],
    not_computed: list[dict[str, Any]],
    warnings: Sequence[str],
) -> dict[str, Any]:
    """The summary dict of one audit (JSON-ready once NaN and numpy scalars are converted).

    ``models``: role -> {"model": id or folder, "fingerprint": ...}; ``compare``:
    (reference, candidate) when delta rows were computed; ``weat_tests`` and
    ``delta_tests`` already carry their Holm-adjusted p-values.
    """
    n_weat, n_delta = _count_tests(weat_tests), _count_tests(delta_tests)
    n_checks, n_reference = judgement.n_tests, judgement.n_reference_tests
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
        "candidate": candidate,
        "reference": reference,
        "verdict": judgement.verdict,
        "headline": verdict.headline,
        "checks": judgement.checks,
        "reference_checks": judgement.reference_checks,
        "fixed": verdict.fixed,
        "not_computed": not_computed,
        "warnings": list(dict.fromkeys(warnings)),
        "n_tests": int(n_checks + n_reference + n_weat + n_delta),
        "multiple_testing": {
            "method": "holm",
            "alpha": spec.policy.alpha,
            "families": {"policy_checks": int(n_checks), "reference_checks": int(n_reference), "weat": int(n_weat),
                         "delta": int(n_delta)},
        },
        "weat_tests": weat_tests,
        "delta_significant": [t for t in delta_tests if t["p_holm"] < spec.policy.alpha],
    }
