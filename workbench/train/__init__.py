"""Fine-tuning engine: strategies, contrastive loss across processes, exact accumulation, the loop,
zero-shot and WiSE-FT evaluation, and the recipes' command line. It knows nothing of audits:
fine-tuning followed by an audit is ``workbench.pipeline``."""

from workbench.train.accumulate import contrastive_step, split_micro_batches
from workbench.train.cli import build_recipe_parser, parse_recipe_args
from workbench.train.config import FinetuneConfig, validate_config
from workbench.train.encoder import ContrastiveEncoder
from workbench.train.health import RUN_HEALTH_FILE
from workbench.train.loop import LossNotFinite, OutOfMemory, complete_checkpoints, last_checkpoint
from workbench.train.loss import contrastive_loss, gather_with_grad
from workbench.train.run import default_run_dir, finetune
from workbench.train.strategies import (
    DEFAULT_LORA_TARGETS,
    STRATEGIES,
    Strategy,
    StrategySettings,
    apply_strategy,
    clamp_logit_scale,
    get_strategy,
    is_no_decay,
    param_groups,
    resolve_lora_targets,
    split_by_decay,
)
from workbench.train.threads import use_cpu_threads
from workbench.train.wise import interpolate_state_dicts, wise_model

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "RUN_HEALTH_FILE",
    "STRATEGIES",
    "ContrastiveEncoder",
    "FinetuneConfig",
    "LossNotFinite",
    "OutOfMemory",
    "Strategy",
    "StrategySettings",
    "apply_strategy",
    "build_recipe_parser",
    "default_run_dir",
    "clamp_logit_scale",
    "complete_checkpoints",
    "contrastive_loss",
    "contrastive_step",
    "finetune",
    "gather_with_grad",
    "get_strategy",
    "interpolate_state_dicts",
    "is_no_decay",
    "last_checkpoint",
    "param_groups",
    "parse_recipe_args",
    "resolve_lora_targets",
    "split_by_decay",
    "split_micro_batches",
    "use_cpu_threads",
    "validate_config",
    "wise_model",
]
