"""Try remedies on a run folder, audit every variant beside the candidate, and say what each one did.

For a run folder (base, fine-tuned candidate, the audit that judged it) each remedy makes one
variant, an ordinary run folder under ``<run>/variants/<remedy>/`` (``model/`` is a
``save_pretrained`` CLIPModel, ``base_model.json`` names the same base):

- ``balance`` / ``align``: the run's recipe configuration (``config.json`` "config") fine-tuned
  again, in this process, with the remedy's flags added (``--balance-groups``,
  ``--balance-by-label``; ``--align-weight``, ``--align-attributes``);
- ``project``: the candidate with the debiasing projection folded into its text projection
  (:mod:`workbench.mitigate.projection`);
- ``wise``: the WiSE-FT weight chosen on validation (:mod:`workbench.mitigate.interpolate`);
  no folder when no weight qualifies.

Then one ``run_audit`` call audits base, candidate and every variant together, on the run's
audit split with the candidate audit's bootstrap size and seed, so every variant-minus-candidate
difference has a paired interval (:mod:`workbench.mitigate.compare`); each variant is also
audited as the candidate of its own folder (the release gate: variant against base) on the
same data and resamples. ``<run>/variants/summary.json`` (+ ``summary.csv``) holds the result.

Slightly over 400 lines: the four remedies' builders share the run's set-up and are read
best next to the one audit call that compares them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench import schema
from workbench.audit import AuditSpec, ModelEmbeddings, compute_audit, load_audit_spec, run_audit
from workbench.audit.core import group_prompts_needed, prompts_needed
from workbench.audit.runner import audited_data, embed_for_audit, load_audit_data, resolve_model_roles
from workbench.embed import encode_texts
from workbench.io import atomic_dir, atomic_write_json, atomic_write_text, json_ready
from workbench.mitigate.compare import model_points, rows_of_checks, seed_differences, variant_differences
from workbench.mitigate.interpolate import DEFAULT_ALPHAS, AlphaChoice, AlphaOutcome, choose_alpha, fairness_verdicts
from workbench.mitigate.projection import (
    DEFAULT_CALIBRATION,
    SPANS,
    calibrated_projection,
    debias_prompts,
    fold_text_projection,
    orthogonal_complement,
)
from workbench.models import is_run_folder, load_clip, model_fingerprint, save_clip
from workbench.pipeline import AUTO_AUDIT, GENERATED_AUDIT_FILE, audit_split
from workbench.report.mitigation import (
    MITIGATION_CSV,
    MITIGATION_DIR,
    MITIGATION_SCHEMA_VERSION,
    MITIGATION_SUMMARY,
    OVERALL_ACCURACY_KEY,
    REMEDY_LABELS,
    remedy_sentence,
)
from workbench.train import FinetuneConfig, finetune, wise_model
from workbench.train.wise import check_alphas

REMEDIES: tuple[str, ...] = ("balance", "align", "project", "wise")
FINETUNE_REMEDIES = ("balance", "align")
JOINT_AUDIT_DIR = "audit"  # <run>/variants/audit/<audit name>/: base, candidate and every variant together
CANDIDATE, REFERENCE = "tuned", "base"
CANDIDATE_RERUN = "candidate"  # variants/candidate-seed<N>/: the candidate's configuration with another seed
MITIGATION_KEY = "mitigation"  # what a variant's config.json states about how it was made


@dataclass(frozen=True)
class RemedySettings:
    """The remedies' own settings (the command line's flags), defaults stated once here."""

    balance_groups: tuple[str, ...] = ()  # default: the audit's attributes
    balance_by_label: bool = False
    balance_method: str = ""  # "" = the recipes' default (reweight); or "resample" (--balance-method)
    align_weight: float = 0.5
    align_attributes: tuple[str, ...] = ()  # default: the audit's attributes
    project_attributes: tuple[str, ...] = ()  # default: every attribute of the audit
    project_templates: tuple[str, ...] = ()  # default: the audit's group-prompt wording
    project_calibration: float = DEFAULT_CALIBRATION
    project_span: str = SPANS[0]  # "differences": centre each prompt set; "prompts": the paper's span
    wise_alphas: tuple[float, ...] = ()  # default: the run's --wise-alpha, else 0, 0.1, ..., 1
    seeds: int = 1  # training runs per fine-tuning remedy (and of the candidate's configuration)


@dataclass
class RunSetup:
    """What the remedies read from the run folder."""

    run_dir: Path
    recipe: str
    config: FinetuneConfig
    spec: AuditSpec
    base: dict[str, Any]  # base_model.json
    n_boot: int
    seed: int
    holdout: dict[str, Any] | None = None  # config.json "validation_holdout": a split the recipe carved from train
    _sources: dict[str, Any] = field(default_factory=dict, repr=False)

    def audit_data(self, split: str) -> Any:
        """What ``run_audit`` reads for ``split`` of the run's data: the source itself, or the split
        the recipe held out of train, carved again the same way (``audited_data``, as the printed
        audit command does); DataError naming the split when neither exists."""
        if split not in self._sources:
            carved = self.holdout if self.holdout and self.holdout.get("split") == split else None
            self._sources[split] = audited_data(self.config, split, carved["fraction"] if carved else None,
                                                int(carved["seed"]) if carved else 0, self.spec)[0]
        return self._sources[split]

    @property
    def candidate_model(self) -> Path:
        return self.run_dir / schema.RUN_MODEL_DIR

    @property
    def variants_dir(self) -> Path:
        return self.run_dir / MITIGATION_DIR


@dataclass
class VariantOutcome:
    remedy: str
    status: str  # "ok" | "no_model" | "failed"
    folder: Path | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None  # wall time to make the variant (None: made by an earlier call)
    reruns: list[Path] = field(default_factory=list)  # the same remedy trained with the next seeds


def base_revision(setup: RunSetup) -> str | None:
    """The hub commit the run was trained from, else its revision: as the audit of a run folder reads it."""
    return resolve_model_roles(setup.run_dir)["base"]["revision"]


def _finetune_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(FinetuneConfig)}


def read_run_setup(run_dir: str | os.PathLike, *, audit: str | None = None, n_boot: int | None = None,
                   seed: int | None = None) -> RunSetup:
    """The run's recipe configuration, audit and base; ValueError naming the file and the fix."""
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise ValueError(f"{run_dir}: not a run folder (needs {schema.RUN_CONFIG_FILE} and {schema.RUN_MODEL_DIR}/); "
                         "pass the folder a recipe wrote, e.g. runs/medical-full-<time>")
    config_file, base_file = run_dir / schema.RUN_CONFIG_FILE, run_dir / schema.RUN_BASE_FILE
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    if MITIGATION_KEY in saved:
        raise ValueError(f"{run_dir} is itself a variant ({saved[MITIGATION_KEY].get('remedy')}); "
                         "pass the run folder it was made from")
    values = saved.get("config")
    if not isinstance(values, dict):
        raise ValueError(f"{config_file}: no \"config\" object (the recipe configuration); this run was not written "
                         "by a recipe, so its configuration cannot be re-run")
    unknown = sorted(set(values) - _finetune_fields())
    if unknown:
        raise ValueError(f"{config_file}: config keys {unknown} are not flags of this version's recipes; "
                         "re-run the recipe with this version first")
    config = FinetuneConfig(**values)
    if not base_file.is_file():
        raise ValueError(f"{base_file}: missing; the run's base model is needed as the reference")
    base = json.loads(base_file.read_text(encoding="utf-8"))
    audit = audit or config.audit
    if audit == AUTO_AUDIT:
        # The recipe generated an audit for data that is not its demo and kept it in the run folder.
        generated = run_dir / GENERATED_AUDIT_FILE
        if not generated.is_file():
            raise ValueError(f"{generated}: missing (the run's audit was generated from its data); pass --audit "
                             f"<file>, e.g. one written by python -m workbench.audit init")
        audit = str(generated)
    if not audit:
        raise ValueError(f"{config_file}: the run has no audit (config \"audit\" is empty); pass --audit audits/<name>.yaml")
    spec = load_audit_spec(audit)
    boot = {}
    candidate_summary = run_dir / schema.RUN_AUDIT_DIR / spec.name / schema.SUMMARY_FILE
    if candidate_summary.is_file():
        boot = json.loads(candidate_summary.read_text(encoding="utf-8")).get("bootstrap") or {}
    return RunSetup(
        run_dir=run_dir, recipe=str(saved.get("recipe") or "recipe"), config=config, spec=spec, base=base,
        n_boot=int(n_boot if n_boot is not None else boot.get("n_boot", spec.bootstrap.n_boot)),
        seed=int(seed if seed is not None else boot.get("seed", spec.bootstrap.seed)),
        holdout=saved.get("validation_holdout"),
    )


def check_remedies(remedies: Sequence[str], setup: RunSetup, settings: RemedySettings) -> None:
    """Every problem that needs no model or data, before any work; ValueError naming the flag and the fix."""
    unknown = [r for r in remedies if r not in REMEDIES]
    if unknown or not remedies:
        raise ValueError(f"--remedy {' '.join(unknown) or '(none)'}: choose from {' '.join(REMEDIES)}")
    fields = _finetune_fields()
    for remedy, needed in (("balance", ("balance_groups", "balance_by_label", "balance_method")),
                           ("align", ("align_weight", "align_attributes"))):
        missing = [n for n in needed if n not in fields]
        if remedy in remedies and missing:
            raise ValueError(f"--remedy {remedy}: this version's recipes have no --{missing[0].replace('_', '-')} flag; "
                             "update the workbench or choose another remedy")
    columns = set(setup.spec.group_columns) | set(setup.config.group_columns)
    for flag, values in (("--balance-groups", settings.balance_groups), ("--align-attributes", settings.align_attributes)):
        bad = [v for v in values if v not in columns]
        if bad:
            raise ValueError(f"{flag} {' '.join(bad)}: not a group column of the run or its audit "
                             f"(known: {', '.join(sorted(columns))})")
    if not (isinstance(settings.seeds, int) and settings.seeds >= 1):
        raise ValueError(f"--seeds must be a whole number >= 1, got {settings.seeds}")
    if "wise" in remedies:
        check_alphas(settings.wise_alphas)
        if not setup.config.validation_split:
            raise ValueError("--remedy wise chooses the weight on validation, but the run has no validation split "
                             "(config \"validation_split\" is empty)")
    if "project" in remedies:
        debias_prompts(setup.spec, settings.project_attributes or None, templates=settings.project_templates)
        if settings.project_calibration < 0:
            raise ValueError(f"--project-lambda must be at least 0, got {settings.project_calibration}")
        if settings.project_span not in SPANS:
            raise ValueError(f"--project-span {settings.project_span}: choose {' or '.join(SPANS)}")


def finetune_remedy_config(setup: RunSetup, remedy: str | None, settings: RemedySettings, output_dir: Path,
                           seed_offset: int = 0) -> FinetuneConfig:
    """The run's recipe configuration with the remedy's flags added (None: none, a re-run of the
    candidate's configuration), its seed moved by ``seed_offset``, writing into ``output_dir``."""
    attributes = [a for a in setup.spec.group_columns if a in setup.config.group_columns] or list(setup.spec.group_columns)
    changes: dict[str, Any] = {"output_dir": str(output_dir), "audit": "", "seeds": 1, "resume": False, "wise_alpha": [],
                               "seed": setup.config.seed + seed_offset}
    if remedy is None:
        pass
    elif remedy == "balance":
        changes.update(balance_groups=list(settings.balance_groups or attributes), balance_by_label=settings.balance_by_label,
                       balance_method=settings.balance_method)
    elif remedy == "align":
        changes.update(align_weight=settings.align_weight, align_attributes=list(settings.align_attributes or attributes))
    else:
        raise ValueError(f"{remedy!r} is not a fine-tuning remedy ({', '.join(FINETUNE_REMEDIES)})")
    group_columns = list(dict.fromkeys([*setup.config.group_columns, *changes.get("balance_groups", []),
                                        *changes.get("align_attributes", [])]))
    changes["group_columns"] = group_columns
    return dataclasses.replace(setup.config, **changes)


def _mark_variant(folder: Path, remedy: str, setup: RunSetup, details: Mapping[str, Any]) -> None:
    """State in the variant's config.json how it was made (the run it came from, the remedy's settings)."""
    config_file = folder / schema.RUN_CONFIG_FILE
    saved = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    saved[MITIGATION_KEY] = {"remedy": remedy, "from_run": str(setup.run_dir), **details}
    atomic_write_json(config_file, saved)


def _write_model_variant(folder: Path, model, processor, setup: RunSetup, remedy: str, details: Mapping[str, Any]) -> None:
    """A variant made without training: model/, base_model.json and config.json, written as one folder."""
    with atomic_dir(folder) as tmp:
        save_clip(model, processor, tmp / schema.RUN_MODEL_DIR)
        shutil.copyfile(setup.run_dir / schema.RUN_BASE_FILE, tmp / schema.RUN_BASE_FILE)
        saved = json.loads((setup.run_dir / schema.RUN_CONFIG_FILE).read_text(encoding="utf-8"))
        saved["config"] = {**saved.get("config", {}), "output_dir": str(folder), "audit": ""}
        saved[MITIGATION_KEY] = {"remedy": remedy, "from_run": str(setup.run_dir), **details}
        atomic_write_json(tmp / schema.RUN_CONFIG_FILE, saved)


def rerun_folder(setup: RunSetup, name: str, seed_offset: int) -> Path:
    """``variants/<remedy>`` for the first training run, ``variants/<name>-seed<seed>`` for the next ones."""
    if seed_offset == 0 and name != CANDIDATE_RERUN:
        return setup.variants_dir / name
    return setup.variants_dir / f"{name}-seed{setup.config.seed + seed_offset}"


def _remove_reruns(setup: RunSetup, name: str) -> None:
    """Training runs of an earlier call with more seeds: they no longer belong to this comparison."""
    for old in setup.variants_dir.glob(f"{name}-seed*"):
        if old.is_dir():
            shutil.rmtree(old)


def _finetune_into(setup: RunSetup, remedy: str | None, settings: RemedySettings, seed_offset: int) -> tuple[Path, dict]:
    folder = rerun_folder(setup, remedy or CANDIDATE_RERUN, seed_offset)
    config = finetune_remedy_config(setup, remedy, settings, folder, seed_offset)
    if folder.exists():
        shutil.rmtree(folder)  # a previous try of this remedy: finetune refuses a folder holding checkpoints
    finetune(config, recipe=setup.recipe)
    flags = {k: getattr(config, k) for k in ("balance_groups", "balance_by_label", "balance_method", "align_weight",
                                             "align_attributes", "seed")
             if hasattr(config, k)}
    _mark_variant(folder, remedy or CANDIDATE_RERUN, setup, {"flags": flags})
    return folder, flags


def make_finetuned_variant(setup: RunSetup, remedy: str, settings: RemedySettings) -> VariantOutcome:
    """The remedy's fine-tuning run (and, with ``settings.seeds`` > 1, its runs with the next seeds)."""
    _remove_reruns(setup, remedy)
    folder, flags = _finetune_into(setup, remedy, settings, 0)
    reruns = [_finetune_into(setup, remedy, settings, k)[0] for k in range(1, settings.seeds)]
    details = {"flags": flags, "training_runs": settings.seeds}
    return VariantOutcome(remedy, "ok", folder, details=details, reruns=reruns)


def make_candidate_reruns(setup: RunSetup, settings: RemedySettings) -> list[Path]:
    """The candidate's own configuration trained again with the next ``seeds - 1`` seeds: how far
    re-training alone moves every metric, against which a fine-tuning remedy is judged."""
    _remove_reruns(setup, CANDIDATE_RERUN)
    return [_finetune_into(setup, None, settings, k)[0] for k in range(1, settings.seeds)]


def make_projection_variant(setup: RunSetup, settings: RemedySettings) -> VariantOutcome:
    """The candidate with the calibrated debiasing projection folded into its text projection."""
    model, processor = load_clip(str(setup.candidate_model), trust_remote_code=setup.config.trust_remote_code)
    class_labels = list(setup.spec.classes.labels or ()) if setup.spec.classes else []
    prompts = debias_prompts(setup.spec, settings.project_attributes or None, class_labels=class_labels,
                             templates=settings.project_templates)
    texts = prompts.texts()
    emb = encode_texts(model, processor.tokenizer, texts).numpy()
    index = {t: i for i, t in enumerate(texts)}
    attribute_emb = emb[[index[t] for t in prompts.attribute_prompts]]
    pair_emb = np.stack([[emb[index[a]], emb[index[b]]] for a, b in prompts.pairs]) if prompts.pairs else np.zeros((0, 2, emb.shape[1]))
    sets = prompts.set_index() if settings.project_span == "differences" else None
    projection = calibrated_projection(attribute_emb, pair_emb, settings.project_calibration, sets)
    fold_text_projection(model, projection)
    p0_rank = int(round(np.trace(orthogonal_complement(attribute_emb, sets))))
    details = {"attributes": list(prompts.attributes), "attribute_prompts": list(prompts.attribute_prompts),
               "span": settings.project_span, "calibration_pairs": len(prompts.pairs),
               "lambda": settings.project_calibration, "removed_dimensions": attribute_emb.shape[1] - p0_rank}
    folder = setup.variants_dir / "project"
    _write_model_variant(folder, model, processor, setup, "project", details)
    return VariantOutcome("project", "ok", folder, details=details)


def wise_sweep_on_validation(setup: RunSetup, alphas: Sequence[float], *, progress: bool = False) -> tuple[list[AlphaOutcome], Any]:
    """Audit every WiSE-FT weight on the validation split as the candidate against the base.

    Returns the sweep and (base, tuned, processor) for building the chosen model.
    """
    config, spec = setup.config, setup.spec
    data = load_audit_data(setup.audit_data(config.validation_split), spec, split=config.validation_split,
                           image_column=config.image_column,
                           label_column=config.label_column or None, group_columns=list(config.group_columns) or None,
                           revision=config.data_revision, config_name=config.data_config)
    prompts = list(dict.fromkeys(prompts_needed(spec, data.class_labels) + group_prompts_needed(spec, data.table)))
    base, processor = load_clip(str(setup.base["model"]), revision=base_revision(setup),
                                trust_remote_code=config.trust_remote_code)
    tuned, _ = load_clip(str(setup.candidate_model), trust_remote_code=config.trust_remote_code)
    pixel_cache: dict[str, Any] = {}

    def embeddings(model, name: str) -> tuple[ModelEmbeddings, np.ndarray]:
        image, text, valid, _bad = embed_for_audit(model, processor, data, prompts, cache_dir=None,
                                                   pixel_cache=pixel_cache, progress=progress)
        return ModelEmbeddings(image=image, text={p: text[i] for i, p in enumerate(prompts)}, model=name,
                               fingerprint=model_fingerprint(model)), valid

    base_emb, base_valid = embeddings(base, str(setup.base["model"]))
    sweep = []
    for alpha in alphas:
        mixed = wise_model(base, tuned, alpha)
        emb, valid = embeddings(mixed, f"{setup.candidate_model} (WiSE-FT alpha {alpha:g})")
        keep = base_valid & valid
        table = data.table[keep].reset_index(drop=True)
        pair = {REFERENCE: dataclasses.replace(base_emb, image=base_emb.image[keep]),
                "wise": dataclasses.replace(emb, image=emb.image[keep])}
        result = compute_audit(spec, table, pair, class_labels=data.class_labels, data_info=dict(data.info, n=int(keep.sum())),
                               n_boot=setup.n_boot, seed=setup.seed, candidate="wise", reference=REFERENCE)
        acc = result.results[(result.results["model"] == "wise") & (result.results["metric"] == "accuracy")
                             & (result.results["group"] == schema.OVERALL) & (result.results["label"] == "")]
        accuracy = float(acc["value"].iloc[0]) if len(acc) else float("nan")
        sweep.append(AlphaOutcome(float(alpha), accuracy, fairness_verdicts(result.summary["checks"])))
    return sweep, (base, tuned, processor)


def make_wise_variant(setup: RunSetup, settings: RemedySettings) -> VariantOutcome:
    alphas = check_alphas(settings.wise_alphas or setup.config.wise_alpha or DEFAULT_ALPHAS)
    sweep, (base, tuned, processor) = wise_sweep_on_validation(setup, alphas)
    choice: AlphaChoice = choose_alpha(sweep)
    folder = setup.variants_dir / "wise"
    details = {"validation_split": setup.config.validation_split, **choice.to_dict()}
    if choice.alpha is None:
        if folder.exists():
            shutil.rmtree(folder)  # an older choice no longer stands
        return VariantOutcome("wise", "no_model", None, choice.sentence, details)
    _write_model_variant(folder, wise_model(base, tuned, choice.alpha), processor, setup, "wise", details)
    return VariantOutcome("wise", "ok", folder, choice.sentence, details)


def _audit_kwargs(setup: RunSetup) -> dict[str, Any]:
    c = setup.config
    return dict(split=audit_split(c), image_column=c.image_column, label_column=c.label_column or None,
                group_columns=list(c.group_columns) or None, data_revision=c.data_revision, data_config=c.data_config,
                trust_remote_code=c.trust_remote_code, n_boot=setup.n_boot, seed=setup.seed)


def _existing_variants(setup: RunSetup) -> list[str]:
    return [r for r in REMEDIES if is_run_folder(setup.variants_dir / r)]


def mitigate(
    run_dir: str | os.PathLike,
    remedies: Sequence[str],
    settings: RemedySettings = RemedySettings(),
    *,
    audit: str | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make each remedy's variant, audit them with the candidate, write and return the mitigation summary."""
    setup = read_run_setup(run_dir, audit=audit, n_boot=n_boot, seed=seed)
    check_remedies(remedies, setup, settings)
    # The audited split (and WiSE's validation split) found or carved now, before any training.
    setup.audit_data(audit_split(setup.config))
    if "wise" in remedies:
        setup.audit_data(setup.config.validation_split)
    previous = _previous_outcomes(setup)
    outcomes: dict[str, VariantOutcome] = {}
    candidate_reruns: list[Path] = []
    if settings.seeds > 1 and any(r in FINETUNE_REMEDIES for r in remedies):
        say(f"== the candidate's configuration, {settings.seeds - 1} more training run(s) ==")
        candidate_reruns = make_candidate_reruns(setup, settings)
    for remedy in dict.fromkeys(remedies):
        say(f"== {REMEDY_LABELS[remedy]} ==")
        started = time.perf_counter()
        if remedy in FINETUNE_REMEDIES:
            outcomes[remedy] = make_finetuned_variant(setup, remedy, settings)
        elif remedy == "project":
            outcomes[remedy] = make_projection_variant(setup, settings)
        else:
            outcomes[remedy] = make_wise_variant(setup, settings)
        outcomes[remedy].seconds = round(time.perf_counter() - started, 2)
        if outcomes[remedy].note:
            say(outcomes[remedy].note)
    for remedy in _existing_variants(setup):  # variants of earlier calls stay in the comparison
        outcomes.setdefault(remedy, previous.get(remedy) or VariantOutcome(remedy, "ok", setup.variants_dir / remedy))
    for remedy, old in previous.items():
        outcomes.setdefault(remedy, old)
    summary = audit_variants(setup, outcomes, progress=progress, candidate_reruns=candidate_reruns)
    for v in summary["variants"]:
        say(v["sentence"])
    return summary


def _previous_outcomes(setup: RunSetup) -> dict[str, VariantOutcome]:
    path = setup.variants_dir / MITIGATION_SUMMARY
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for v in old.get("variants", []):
        remedy = v.get("remedy")
        if remedy in REMEDIES and (v.get("status") != "ok" or is_run_folder(setup.variants_dir / remedy)):
            folder = setup.variants_dir / remedy if v.get("status") == "ok" else None
            out[remedy] = VariantOutcome(remedy, str(v.get("status")), folder, str(v.get("note") or ""),
                                         dict(v.get("details") or {}), v.get("seconds"))
    return out


def seed_role(name: str, k: int) -> str:
    """The joint audit's model name of a training run: ``name`` for the first, ``name_seed<k>`` for the next."""
    return name if k == 0 else f"{name}_seed{k}"


def audit_variants(setup: RunSetup, outcomes: Mapping[str, VariantOutcome], *, progress: bool = True,
                   candidate_reruns: Sequence[Path] = ()) -> dict[str, Any]:
    """The joint audit (base, candidate, variants: paired differences) and each variant's own gate; writes the summary.

    A fine-tuning remedy with re-runs (``--seeds``) is compared as the mean of its runs against
    the mean of the candidate's configuration's runs (:func:`seed_differences`), so its interval
    holds run-to-run variation as well; every other variant against the candidate, paired.
    """
    spec, kwargs = setup.spec, _audit_kwargs(setup)
    started = time.perf_counter()
    made = [r for r in REMEDIES if r in outcomes and outcomes[r].status == "ok"]
    models: dict[str, Any] = {REFERENCE: {"model": str(setup.base["model"]), "revision": base_revision(setup)},
                              CANDIDATE: str(setup.candidate_model)}
    models.update({r: str(outcomes[r].folder / schema.RUN_MODEL_DIR) for r in made})
    candidate_roles = [CANDIDATE] + [seed_role(CANDIDATE, k + 1) for k in range(len(candidate_reruns))]
    models.update({seed_role(CANDIDATE, k + 1): str(f / schema.RUN_MODEL_DIR) for k, f in enumerate(candidate_reruns)})
    remedy_roles: dict[str, list[str]] = {}
    for r in made:
        remedy_roles[r] = [r] + [seed_role(r, k + 1) for k in range(len(outcomes[r].reruns))]
        models.update({seed_role(r, k + 1): str(f / schema.RUN_MODEL_DIR) for k, f in enumerate(outcomes[r].reruns)})
    joint = run_audit(spec, models, setup.audit_data(kwargs["split"]), output=setup.variants_dir / JOINT_AUDIT_DIR / spec.name,
                      candidate=CANDIDATE, reference=REFERENCE, progress=progress, **kwargs)
    rows = rows_of_checks(joint.summary["checks"])
    level = spec.bootstrap.level
    differences = []
    for r in made:
        if len(remedy_roles[r]) > 1 and len(candidate_roles) > 1:
            differences += seed_differences(joint.results, joint.replicates, variant=r, candidate_roles=candidate_roles,
                                            variant_roles=remedy_roles[r], rows=rows, level=level)
        else:
            differences += variant_differences(joint.results, joint.replicates, candidate=CANDIDATE, variants=[r],
                                               rows=rows, level=level)
    points = model_points(joint.results, [REFERENCE, CANDIDATE, *made], rows)
    variants = []
    for remedy in REMEDIES:
        if remedy not in outcomes:
            continue
        o = outcomes[remedy]
        entry = {"remedy": remedy, "role": remedy, "label": REMEDY_LABELS[remedy], "status": o.status,
                 "folder": str(o.folder.relative_to(setup.run_dir)) if o.folder else "", "verdict": None,
                 "headline": "", "note": o.note, "details": o.details, "seconds": o.seconds}
        if o.status == "ok":
            gate = run_audit(spec, str(o.folder), setup.audit_data(kwargs["split"]), progress=False, **kwargs)
            mine = [d for d in differences if d["variant"] == remedy]
            overall = next((d for d in mine if d["key"] == OVERALL_ACCURACY_KEY), None)
            sentence = remedy_sentence(REMEDY_LABELS[remedy], [d for d in mine if d is not overall], overall)
            if remedy in FINETUNE_REMEDIES:
                runs = len(remedy_roles[remedy])
                sentence += (f" (means of {runs} training runs each; the intervals include run-to-run variation)"
                             if runs > 1 and len(candidate_roles) > 1 else
                             " (one training run each: the interval leaves out run-to-run variation, which re-training "
                             "alone shows; judge with --seeds 3)")
            entry.update(verdict=gate.summary["verdict"], headline=gate.summary.get("headline", ""), sentence=sentence,
                         training_runs=len(remedy_roles[remedy]))
        else:
            entry["sentence"] = f"{REMEDY_LABELS[remedy]}: {o.note or 'no model was made'}"
        variants.append(entry)
    summary = {
        "schema_version": MITIGATION_SCHEMA_VERSION, "run": str(setup.run_dir), "audit": spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "candidate": CANDIDATE,
        "reference": REFERENCE, "candidate_verdict": joint.summary["verdict"], "split": kwargs["split"],
        "n_boot": setup.n_boot, "seed": setup.seed, "level": spec.bootstrap.level,
        "candidate_training_runs": len(candidate_roles),
        "joint_audit": str(Path(MITIGATION_DIR) / JOINT_AUDIT_DIR / spec.name),
        "variants": variants, "points": points, "differences": differences,
        "audit_seconds": round(time.perf_counter() - started, 2),  # the joint audit and every variant's gate
    }
    write_summary(setup.variants_dir, summary)
    return summary


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    """summary.json and the difference table as summary.csv, each written atomically."""
    atomic_write_json(folder / MITIGATION_SUMMARY, json_ready(summary))
    atomic_write_text(folder / MITIGATION_CSV, pd.DataFrame(summary["differences"]).to_csv(index=False))

