"""Live prompt probe: a typed prompt's top-k images and skew, as the audit would compute them.

The probe runs the audit's own computation (:func:`workbench.audit.core.compute_audit`,
hence its skew family, its stratified paired bootstrap and its control-prompt baseline) on
an audit definition reduced to the skew section with the typed prompt as its only concept
prompt, over the audit's own image embeddings and table. Only the text tower runs, and
only for a prompt the audit did not encode. The bootstrap resamples depend on the strata,
``n_boot`` and ``seed`` alone, so a prompt that is in the audit gets exactly the audit's
rows back (same k, targets, seed and ``n_boot``; tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from workbench.audit.core import ModelEmbeddings, compute_audit
from workbench.audit.spec import AuditSpec
from workbench.live.session import LiveAudit, LiveError

# The skew family's per-prompt metrics; the aggregates over prompts (ALL_PROMPTS) and the
# control-panel rows (CONTROL_PANEL) describe the whole audit, not the typed prompt.
PROBE_METRICS = ("skew", "max_skew", "min_skew", "ndkl", "specific_skew", "specific_max_skew")


@dataclass
class ProbeResult:
    prompt: str
    in_audit: bool  # the audit itself ranked this prompt (its rows are in results.parquet)
    results: pd.DataFrame  # schema.RESULT_COLUMNS rows of PROBE_METRICS for this prompt, every role and "delta"
    rankings: pd.DataFrame  # model, prompt, rank, row, score, <group columns>: top max(k) per role
    n_boot: int
    seed: int
    warnings: list[str] = field(default_factory=list)


def probe_spec(spec: AuditSpec, prompt: str, *, with_controls: bool = True) -> AuditSpec:
    """``spec`` reduced to its skew section with ``prompt`` as the only concept prompt (and no control
    prompts unless ``with_controls``)."""
    if spec.skew is None:
        raise LiveError(f"audit {spec.name!r} has no skew section (k values, targets, control prompts), so there is "
                        "nothing to probe a prompt against; add one to the audit file and re-run the audit")
    controls = spec.skew.controls if with_controls else ()
    return dataclasses.replace(spec, skew=dataclasses.replace(spec.skew, prompts=(prompt,), controls=controls),
                               classes=None, group_prompts=(), harmful=None)


def probe_prompt(live: LiveAudit, prompt: str, *, n_boot: int | None = None, seed: int | None = None,
                 with_controls: bool = True) -> ProbeResult:
    """Skew@k, MaxSkew, MinSkew, NDKL and specific skew of ``prompt`` for every audited model, with intervals.

    ``n_boot`` and ``seed`` default to what the audit used (its summary), so the intervals
    are the audit's; a smaller ``n_boot`` answers faster with wider Monte Carlo error.
    ``with_controls=False`` leaves out specific skew: ranking the control panel in every
    resample is most of the work, and the image resamples (hence every other row) do not
    depend on the controls, so the remaining rows are unchanged.
    """
    prompt = prompt.strip()
    if not prompt:
        raise LiveError("the prompt is empty; type the text to rank the images by")
    spec = probe_spec(live.spec, prompt, with_controls=with_controls)
    boot = live.summary.get("bootstrap") or {}
    n_boot = int(boot.get("n_boot", spec.bootstrap.n_boot)) if n_boot is None else int(n_boot)
    seed = int(boot.get("seed", spec.bootstrap.seed)) if seed is None else int(seed)
    needed = [prompt, *spec.skew.controls]
    embeddings = {
        role: ModelEmbeddings(image=m.image, text={p: live.prompt_embedding(role, p) for p in needed},
                              model=m.reference, fingerprint=m.fingerprint)
        for role, m in live.models.items()
    }
    # Only the columns the skew family reads: a label or caption column would start families
    # (accuracy, caption retrieval) that need prompts the probe does not encode.
    table = live.table[["row", *[c for c in spec.group_columns if c in live.table.columns]]]
    result = compute_audit(spec, table, embeddings, data_info=live.data.info, n_boot=n_boot, seed=seed,
                           candidate=live.candidate, reference=live.reference)
    rows = result.results
    rows = rows[(rows["prompt"] == prompt) & rows["metric"].isin(PROBE_METRICS)].reset_index(drop=True)
    warnings = [w for w in result.summary.get("warnings", []) if isinstance(w, str)]
    if prompt in live.spec.skew.controls:
        warnings.append(f"{prompt!r} is one of the audit's control prompts: its specific skew compares it with a "
                        "panel that includes itself")
    return ProbeResult(prompt=prompt, in_audit=prompt in live.spec.skew.prompts, results=rows,
                       rankings=result.rankings.reset_index(drop=True), n_boot=n_boot, seed=seed, warnings=warnings)
