"""Remedies for an unfair fine-tuned CLIP, each measured with the audit's paired intervals.

``python -m workbench.mitigate <run folder> --remedy balance align project wise`` makes one
variant per remedy under ``<run>/variants/``, audits them beside the candidate and writes
``<run>/variants/summary.json``. The recipe layer: it may import the pipeline, training and audit.
"""

from workbench.mitigate.compare import ComparedRow, model_points, rows_of_checks, variant_differences
from workbench.mitigate.interpolate import DEFAULT_ALPHAS, AlphaChoice, AlphaOutcome, choose_alpha, fairness_verdicts
from workbench.mitigate.projection import (
    DebiasPrompts,
    calibrated_projection,
    debias_prompts,
    fold_text_projection,
    orthogonal_complement,
    project_embeddings,
)
from workbench.mitigate.run import REMEDIES, RemedySettings, mitigate, read_run_setup

__all__ = [
    "DEFAULT_ALPHAS",
    "REMEDIES",
    "AlphaChoice",
    "AlphaOutcome",
    "ComparedRow",
    "DebiasPrompts",
    "RemedySettings",
    "calibrated_projection",
    "choose_alpha",
    "debias_prompts",
    "fairness_verdicts",
    "fold_text_projection",
    "mitigate",
    "model_points",
    "orthogonal_complement",
    "project_embeddings",
    "read_run_setup",
    "rows_of_checks",
    "variant_differences",
]
