"""The fine-tuning configuration shared by every recipe, and its validation.

A recipe subclasses :class:`FinetuneConfig` only to change defaults, and parses the
command line with ``transformers.HfArgumentParser`` (``workbench.train.cli``); each
field's ``help`` becomes the flag's help text (``--per-device-batch-size`` and
``--per_device_batch_size`` both work). The data flags (``--dataset``, columns, hub
config and revision) come from :class:`workbench.data.DataArguments`, declared once there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pathlib import Path

from workbench.data import DataArguments, ValidationHoldout
from workbench.train.align import DEFAULT_BLUR
from workbench.train.balance import BALANCE_METHODS
from workbench.train.strategies import DEFAULT_LORA_TARGETS, DEFAULT_STRATEGY, STRATEGIES, StrategySettings, validate_strategy
from workbench.train.wise import check_alphas

MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "all")


def _help(text: str, **kw) -> dict:
    return {"metadata": {"help": text}, **kw}


@dataclass
class FinetuneConfig(DataArguments):
    # What to fine-tune (the data flags are DataArguments').
    model: str = field(**_help("hub id, save_pretrained folder, run folder, or workbench/demo-clip"), default="")
    revision: str | None = field(**_help("model revision (branch, tag or commit) on the hub"), default=None)
    trust_remote_code: bool = field(**_help("allow code from the model repository to run (off: safer)"), default=False)
    train_split: str = field(**_help("split to train on"), default="train")
    validation_split: str = field(
        **_help("split for evaluation during training; empty: none. When the data has no such split, "
                "--validation-fraction of train is held out as it (stratified by label x group, seeded by --seed)"),
        default="validation",
    )
    validation_fraction: float = field(
        **_help("share of the training split held out as the validation split when the data has none "
                "(every label x group cell alike, seeded; stated in config.json)"),
        default=0.1,
    )
    test_split: str = field(**_help("split for the final zero-shot test; empty: none"), default="test")
    max_train_samples: int | None = field(**_help("use only the first N training rows (quick trials)"), default=None)
    pixel_cache_dir: str | None = field(
        **_help("decode images once into memory-mapped files here, shared by all processes and later runs"),
        default=None,
    )
    templates: list[str] = field(
        **_help("zero-shot prompt templates, '{}' marks the class name; averaged as a prompt ensemble"),
        default_factory=lambda: ["a photo of {}."],
    )

    # How to train.
    strategy: str = field(**_help(" | ".join(f"{n} ({s.description})" for n, s in STRATEGIES.items())), default=DEFAULT_STRATEGY)
    unfreeze_last_blocks: int = field(
        **_help("train only the last N blocks of each trained tower (+ final norms, projections, temperature); 0: all"),
        default=0,
    )
    lora_r: int = field(**_help("LoRA rank"), default=16)
    lora_alpha: int = field(**_help("LoRA scaling numerator (scale = alpha / r)"), default=32)
    lora_dropout: float = field(**_help("dropout on the LoRA input"), default=0.0)
    lora_targets: list[str] = field(
        **_help("module names to adapt in both towers, or tower:name (text:fc1, vision:out_proj)"),
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
    )
    learning_rate: float = field(**_help("peak learning rate (real CLIPs: 1e-5 or lower for full fine-tuning)"), default=1e-5)
    weight_decay: float = field(**_help("AdamW decay of weight matrices (never temperature, biases, norms, embeddings)"), default=0.1)
    adam_beta2: float = field(**_help("AdamW beta2 (CLIP training uses 0.98)"), default=0.98)
    warmup_steps: int = field(**_help("linear warm-up steps before the cosine decay"), default=20)
    epochs: int = field(**_help("passes over the training split"), default=3)
    max_steps: int | None = field(**_help("stop after this many optimizer steps (overrides epochs)"), default=None)
    per_device_batch_size: int = field(**_help("pairs per micro-batch per process"), default=64)
    accumulation_steps: int = field(
        **_help("micro-batches per optimizer step; exact for the contrastive loss (features cached, recomputed)"),
        default=1,
    )
    max_grad_norm: float | None = field(**_help("clip the gradient norm to this value; empty: no clipping"), default=1.0)
    mixed_precision: str | None = field(
        **_help("no | bf16 | fp16; empty: whatever `accelerate launch`/config says"), default=None
    )
    gradient_checkpointing: bool = field(**_help("recompute activations in backward to save memory"), default=False)
    # Fairness remedies during fine-tuning (issue 13).
    balance_groups: list[str] = field(
        **_help("balanced fine-tuning: resample the training pairs each epoch so every group of these columns "
                "(every combination, with several) contributes equally; stated in config.json"),
        default_factory=list,
    )
    balance_by_label: bool = field(
        **_help("with --balance-groups: balance group x label cells instead of groups"), default=False
    )
    balance_method: str = field(
        **_help("with --balance-groups: reweight (default: the plain shuffle, each pair's loss weighted by its "
                "cell's share) or resample (equal cells per epoch, small cells' pairs repeated); see BENCHMARKS.md "
                "section 12"),
        default="",
    )
    align_weight: float = field(
        **_help("FairCLIP-style regularizer: weight of the Sinkhorn divergence between each group's and the batch's "
                "matched image-text similarities (0: off)"),
        default=0.0,
    )
    align_attributes: list[str] = field(
        **_help("group columns the alignment regularizer sums over (with --align-weight)"), default_factory=list
    )
    align_blur: float = field(
        **_help("Sinkhorn blur (entropic scale) of the alignment regularizer, in cosine-similarity units"),
        default=DEFAULT_BLUR,
    )
    seed: int = field(**_help("seed for initialisation, shuffling and dropout"), default=0)
    seeds: int = field(
        **_help("train and audit N runs with seeds seed, seed+1, ... into <output-dir>/seed-<s>/ and report the "
                "between-run spread of every audit check next to its within-run interval"),
        default=1,
    )
    cpu: bool = field(**_help("train on CPU even when an accelerator is present"), default=False)
    cpu_threads: int | None = field(
        **_help("CPU threads per process; default: all available cores / local processes "
                "(an OMP_NUM_THREADS you set yourself is kept)"),
        default=None,
    )

    # Evaluation, checkpoints, logging.
    eval_steps: int = field(**_help("zero-shot validation accuracy every N steps (0: only at the end)"), default=50)
    select_best: bool = field(**_help("save the checkpoint with the best validation accuracy as the final model"), default=True)
    eval_batch_size: int = field(**_help("batch size for embedding during evaluation"), default=256)
    checkpoint_steps: int = field(**_help("save a resumable checkpoint every N steps (0: never)"), default=50)
    keep_checkpoints: int = field(**_help("keep this many most recent checkpoints (the best is always kept)"), default=2)
    logging_steps: int = field(**_help("write a train_log.jsonl line every N steps"), default=5)
    report_to: str = field(**_help("trackers: none | tensorboard | wandb | mlflow | all (those installed)"), default="none")
    output_dir: str | None = field(**_help("run folder; default runs/<recipe>-<strategy>-<timestamp>"), default=None)
    resume: bool = field(**_help("continue the run in --output-dir from its last complete checkpoint"), default=False)
    wise_alpha: list[float] = field(
        **_help("WiSE-FT: interpolate base and tuned weights at these alphas (e.g. 0 0.25 0.5 0.75 1) and report accuracy"),
        default_factory=list,
    )
    audit: str = field(
        **_help("audit definition to run on the result (e.g. audits/derm_demo.yaml); 'none': skip; empty: the "
                "recipe's own for its demo data, else one generated from the data into <run>/audit.yaml"),
        default="",
    )
    debug: bool = field(**_help("show the full traceback of an error instead of its one-line message"), default=False)

    def strategy_settings(self) -> StrategySettings:
        """The fields the strategy reads."""
        return StrategySettings(
            unfreeze_last_blocks=self.unfreeze_last_blocks, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout, lora_targets=tuple(self.lora_targets),
        )

    def validation_holdout(self) -> ValidationHoldout:
        """How a missing validation split is carved from train (used only when the data has none)."""
        strata = tuple(c for c in (self.label_column, *self.group_columns) if c)
        return ValidationHoldout(name=self.validation_split, source_split=self.train_split,
                                 fraction=self.validation_fraction, seed=self.seed, strata=strata)

    def evaluation_splits(self) -> list[str]:
        """Validation then test, those that are set (zero-shot is reported on each)."""
        return [s for s in (self.validation_split, self.test_split) if s]


def validate_config(config: FinetuneConfig) -> None:
    """Every check that needs no model or data; raises ``ValueError`` naming the flag and the fix."""
    validate_strategy(config.strategy, config.strategy_settings())
    if not config.model:
        raise ValueError("--model is required (hub id, folder, run folder, or workbench/demo-clip)")
    if not config.dataset:
        raise ValueError("--dataset is required (hub id, folder, or workbench/demo-derm)")
    if not config.label_column:
        raise ValueError("--label-column is required: zero-shot evaluation compares predictions with the class names in it")
    if config.mixed_precision not in (None, *MIXED_PRECISION):
        raise ValueError(f"--mixed-precision {config.mixed_precision!r}; choose one of: {', '.join(MIXED_PRECISION)}")
    if config.report_to not in TRACKERS:
        raise ValueError(f"--report-to {config.report_to!r}; choose one of: {', '.join(TRACKERS)}")
    for name in ("per_device_batch_size", "accumulation_steps", "epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.per_device_batch_size < 2:
        raise ValueError("--per-device-batch-size must be at least 2: a contrastive batch needs negatives")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {config.max_steps}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"--learning-rate must be a positive number, got {config.learning_rate:g} (e.g. 1e-5)")
    if config.cpu_threads is not None and config.cpu_threads < 1:
        raise ValueError(f"--cpu-threads must be at least 1, got {config.cpu_threads}; leave it out to use every core")
    for t in config.templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the class name")
    if not config.templates:
        raise ValueError("--templates is empty; give at least one, e.g. 'a photo of {}.'")
    check_alphas(config.wise_alpha)
    if config.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {config.seeds}")
    if config.seeds > 1 and config.resume:
        raise ValueError("--resume continues one run; resume each seed's folder separately (--output-dir <root>/seed-<s>)")
    if config.seeds > 1 and not config.audit:
        raise ValueError("--seeds compares audit checks between runs; give --audit (e.g. audits/derm_demo.yaml)")
    if config.balance_by_label and not config.balance_groups:
        raise ValueError("--balance-by-label balances group x label cells; name the group columns with --balance-groups")
    if config.balance_method and config.balance_method not in BALANCE_METHODS:
        raise ValueError(f"--balance-method {config.balance_method}: choose {' or '.join(BALANCE_METHODS)}")
    if config.balance_method and not config.balance_groups:
        raise ValueError(f"--balance-method {config.balance_method} has no effect without --balance-groups; "
                         "name the group columns to balance (e.g. skin_tone)")
    if len(set(config.balance_groups)) != len(config.balance_groups):
        raise ValueError(f"--balance-groups names a column twice: {' '.join(config.balance_groups)}")
    if not (math.isfinite(config.align_weight) and config.align_weight >= 0):
        raise ValueError(f"--align-weight must be a number >= 0 (0: off), got {config.align_weight:g}")
    if config.align_weight > 0 and not config.align_attributes:
        raise ValueError("--align-weight needs --align-attributes naming the group columns to align (e.g. skin_tone)")
    if config.align_attributes and config.align_weight == 0:
        raise ValueError("--align-attributes has no effect with --align-weight 0; give a weight (e.g. 0.5) or drop them")
    if not (math.isfinite(config.align_blur) and config.align_blur > 0):
        raise ValueError(f"--align-blur must be a positive number, got {config.align_blur:g} (e.g. 0.01)")
    if not (math.isfinite(config.validation_fraction) and 0 < config.validation_fraction < 1):
        raise ValueError(f"--validation-fraction must lie between 0 and 1 (e.g. 0.1), got {config.validation_fraction:g}")
    if config.output_dir and Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise ValueError(f"--output-dir {config.output_dir} is a file; name a folder (it is created if missing)")
    if config.output_dir:
        parent = next((p for p in Path(config.output_dir).absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ValueError(f"--output-dir {config.output_dir}: {parent} is a file; name a folder")
    if config.resume and not config.output_dir:
        raise ValueError("--resume needs --output-dir naming the run folder to continue")
