"""Accuracy per group with gaps and ratios, as an ``evaluate`` metric.

Load by path: ``evaluate.load("workbench/evaluate_metrics/group_accuracy")``. Uses the
same functions as the audit (workbench.audit.metrics).
"""

import datasets
import evaluate
import numpy as np

from workbench.audit import metrics as audit_metrics

_DESCRIPTION = """
Top-1 accuracy overall and for each group, the gap (max minus min group accuracy), the
ratio (min over max), and when ``reference`` names a group, each group's difference and
ratio to it. Group sizes are returned too: a small group's accuracy is noisy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted class per image.
    references (list of str): true class per image.
    groups (list of str): the group of each image.
    reference (str, optional): reference group for differences and ratios.
Returns:
    accuracy (float), by_group (dict group -> float), count (dict group -> int),
    gap (float), min_ratio (float), difference and ratio (dict group -> float, with reference).
Example:
    >>> m = evaluate.load("workbench/evaluate_metrics/group_accuracy")
    >>> m.compute(predictions=["a", "b", "a", "a"], references=["a", "b", "b", "a"], groups=["x", "x", "y", "y"])["gap"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroupAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "groups": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, groups, reference=None):
        names = sorted(set(groups))
        index = {g: i for i, g in enumerate(names)}
        codes = np.array([index[g] for g in groups])
        hits = (np.asarray(predictions) == np.asarray(references)).astype(np.float64)
        members = np.eye(len(names))[codes]
        rates = audit_metrics.group_rates_weighted(hits, members, np.ones((1, len(hits))))[0]
        out = {
            "accuracy": audit_metrics.accuracy(references, predictions),
            "by_group": {g: float(r) for g, r in zip(names, rates)},
            "count": {g: int(c) for g, c in zip(names, members.sum(axis=0))},
            "gap": float(rates.max() - rates.min()),
            "min_ratio": float(rates.min() / rates.max()) if rates.max() > 0 else float("nan"),
        }
        if reference is not None:
            if reference not in index:
                raise ValueError(f"group_accuracy: reference group {reference!r} is not among the groups {names}")
            ref = rates[index[reference]]
            out["difference"] = {g: float(r - ref) for g, r in zip(names, rates) if g != reference}
            out["ratio"] = {g: float(r / ref) if ref > 0 else float("nan") for g, r in zip(names, rates) if g != reference}
        return out
