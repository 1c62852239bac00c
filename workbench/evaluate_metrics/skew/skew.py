"""Association skew of one ranking over image groups, as an ``evaluate`` metric.

Load by path: ``evaluate.load("workbench/evaluate_metrics/skew")``. Same numbers as the
audit (workbench.audit.metrics): Skew_a@k = ln(p_a(k) / p*_a), MaxSkew@k, MinSkew@k and
NDKL, ties broken by row index, an absent group counted with share 1/k.
"""

import datasets
import evaluate
import numpy as np

from workbench.audit import metrics as audit_metrics

_DESCRIPTION = """
Ranks the images by ``scores`` (cosine similarity to one neutral prompt, highest first) and
compares the group mix of the top k with a target: "uniform" (1/number of groups) or "data"
(each group's share of the inputs). Returns per-group skew, MaxSkew, MinSkew and NDKL.
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (list of float): one score per image.
    groups (list of str): the group of each image.
    k (int): top-k cut-off; must be smaller than the number of images.
    target (str): "uniform" or "data".
Returns:
    skew (dict group -> float), max_skew, min_skew, ndkl (float), k (int), target (str).
Example:
    >>> m = evaluate.load("workbench/evaluate_metrics/skew")
    >>> m.compute(scores=[0.9, 0.8, 0.7, 0.6], groups=["a", "a", "b", "b"], k=2)["max_skew"]
    0.6931471805599453
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Skew(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Geyik, Ambler and Kenthapadi 2019; Berg et al. 2022",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores": datasets.Value("float64"), "groups": datasets.Value("string")}),
        )

    def _compute(self, scores, groups, k=None, target="uniform"):
        if k is None:
            raise ValueError("skew: pass k (a top-k cut-off smaller than the number of images); it has no default on purpose")
        scores = np.asarray(scores, dtype=np.float64)
        names = sorted(set(groups))
        index = {g: i for i, g in enumerate(names)}
        codes = np.array([index[g] for g in groups])
        if k >= len(codes):
            raise ValueError(f"skew: k={k} is not smaller than the number of images ({len(codes)})")
        dist = audit_metrics.target_distribution(codes, len(names), target)
        skews = audit_metrics.skew_at_k(scores, codes, len(names), int(k), dist)
        mx, mn = audit_metrics.max_min_skew(skews)
        return {
            "skew": {g: float(s) for g, s in zip(names, skews)},
            "max_skew": mx,
            "min_skew": mn,
            "ndkl": audit_metrics.ndkl(scores, codes, len(names), int(k), dist),
            "k": int(k),
            "target": target,
        }
