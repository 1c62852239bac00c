"""Fine-tuning engine: contrastive loss across processes, exact accumulation, strategies, WiSE-FT, the loop."""

from workbench.train.accumulate import contrastive_step, split_micro_batches
from workbench.train.config import FinetuneConfig
from workbench.train.encoder import ContrastiveEncoder
from workbench.train.loop import LossNotFinite, OutOfMemory, complete_checkpoints, last_checkpoint
from workbench.train.loss import contrastive_loss, gather_with_grad
from workbench.train.run import (
    finetune,
    next_steps,
    parse_recipe_args,
    recipe_main,
    run_audit_if_available,
    validate_config,
)
from workbench.train.strategies import (
    DEFAULT_LORA_TARGETS,
    STRATEGIES,
    apply_strategy,
    clamp_logit_scale,
    is_no_decay,
    param_groups,
    resolve_lora_targets,
    split_by_decay,
)
from workbench.train.wise import interpolate_state_dicts, wise_model

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "STRATEGIES",
    "ContrastiveEncoder",
    "FinetuneConfig",
    "LossNotFinite",
    "OutOfMemory",
    "apply_strategy",
    "clamp_logit_scale",
    "complete_checkpoints",
    "contrastive_loss",
    "contrastive_step",
    "finetune",
    "gather_with_grad",
    "interpolate_state_dicts",
    "is_no_decay",
    "last_checkpoint",
    "next_steps",
    "param_groups",
    "parse_recipe_args",
    "recipe_main",
    "resolve_lora_targets",
    "run_audit_if_available",
    "split_by_decay",
    "split_micro_batches",
    "validate_config",
    "wise_model",
]
