"""What gets trained: full fine-tuning, a frozen image tower (LiT), LoRA, last-N-blocks.

Also the optimizer parameter groups (no weight decay for the temperature, biases, norms,
embeddings and every parameter with fewer than two dimensions) and the temperature clamp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

STRATEGIES: tuple[str, ...] = ("full", "frozen-image", "lora")
TOWERS: tuple[str, ...] = ("text", "vision")
# peft has no default target list for CLIP; the attention projections of both towers are
# what most CLIP LoRA work adapts (fc1/fc2 can be added per tower).
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
MAX_LOG_SCALE = math.log(100.0)

# Parameters of the image side: frozen by "frozen-image" (the LiT setting).
_IMAGE_SIDE_PREFIXES = ("vision_model.", "visual_projection.")
# Final norms and projections stay trainable when only the last N blocks are unfrozen.
_TOWER_HEADS = {
    "text": ("text_model.final_layer_norm.", "text_projection."),
    "vision": ("vision_model.post_layernorm.", "visual_projection."),
}


def _strip_wrappers(name: str) -> str:
    """Parameter name relative to the CLIPModel (drops peft / encoder prefixes)."""
    for prefix in ("clip.", "module.", "base_model.model.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def validate_strategy(strategy: str, *, unfreeze_last_blocks: int = 0) -> None:
    """Raise ``ValueError`` naming the valid choices; cheap, so call it before any compute."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if unfreeze_last_blocks < 0:
        raise ValueError(f"unfreeze_last_blocks must be >= 0 (0 trains every block), got {unfreeze_last_blocks}")
    if strategy == "lora" and unfreeze_last_blocks:
        raise ValueError("unfreeze_last_blocks applies to strategies full and frozen-image, not lora")


def _tower_of(module_name: str) -> str | None:
    if module_name.startswith("text_model.") or module_name == "text_projection":
        return "text"
    if module_name.startswith("vision_model.") or module_name == "visual_projection":
        return "vision"
    return None


def linear_module_names(model: nn.Module) -> dict[str, list[str]]:
    """Full names of every ``nn.Linear`` of a CLIPModel, per tower."""
    out: dict[str, list[str]] = {t: [] for t in TOWERS}
    for name, module in model.named_modules():
        tower = _tower_of(name)
        if tower and isinstance(module, nn.Linear):
            out[tower].append(name)
    return out


def resolve_lora_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Turn target specs into the full module names peft should adapt.

    A spec is a module's last name (``q_proj``: both towers) or ``tower:name``
    (``text:fc1``, ``vision:out_proj``). A spec that matches nothing raises ``ValueError``
    listing the valid names, before any model is wrapped.
    """
    if not targets:
        raise ValueError("lora_targets is empty; name modules such as " + ", ".join(DEFAULT_LORA_TARGETS))
    by_tower = linear_module_names(model)
    chosen: list[str] = []
    for spec in targets:
        tower, _, leaf = spec.rpartition(":")
        towers = TOWERS if not tower else (tower,)
        if tower and tower not in TOWERS:
            raise ValueError(f"LoRA target {spec!r}: tower must be one of {', '.join(TOWERS)} (as in 'text:fc1')")
        hits = [n for t in towers for n in by_tower[t] if n.rsplit(".", 1)[-1] == leaf]
        if not hits:
            valid = sorted({n.rsplit(".", 1)[-1] for t in towers for n in by_tower[t]})
            where = f"the {tower} tower" if tower else "this model"
            raise ValueError(
                f"LoRA target {spec!r} matches no linear module in {where}; valid names: {', '.join(valid)}"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def apply_strategy(
    model: nn.Module,
    strategy: str,
    *,
    unfreeze_last_blocks: int = 0,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
) -> nn.Module:
    """Set ``requires_grad`` for ``strategy`` and return the model to train.

    For ``lora`` the return value is a peft model around ``model`` (modified in place by
    peft); the temperature then stays fixed so the adapter alone describes the change.
    """
    validate_strategy(strategy, unfreeze_last_blocks=unfreeze_last_blocks)
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        modules = resolve_lora_targets(model, lora_targets)
        # No task_type: peft's task wrappers assume a language model and break CLIP's forward.
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=modules)
        return get_peft_model(model, config)

    towers = ("text",) if strategy == "frozen-image" else TOWERS
    for name, param in model.named_parameters():
        param.requires_grad_(_trainable(name, towers, unfreeze_last_blocks, model))
    if strategy == "frozen-image":
        # Nothing of the image side changes, so it can stay in eval mode for good.
        model.vision_model.eval()
    return model


def _num_layers(model: nn.Module, tower: str) -> int:
    sub = model.text_model if tower == "text" else model.vision_model
    return len(sub.encoder.layers)


def _trainable(name: str, towers: Sequence[str], last_n: int, model: nn.Module) -> bool:
    if name == "logit_scale":
        return True
    tower = "text" if name.startswith(("text_model.", "text_projection.")) else "vision"
    if not name.startswith(("text_model.", "text_projection.", "vision_model.", "visual_projection.")):
        return False
    if tower not in towers:
        return False
    if last_n == 0:
        return True
    if name.startswith(_TOWER_HEADS[tower]):
        return True
    n_layers = _num_layers(model, tower)
    if last_n > n_layers:
        raise ValueError(f"unfreeze_last_blocks={last_n} but the {tower} tower has only {n_layers} blocks")
    prefix = f"{tower}_model.encoder.layers."
    if name.startswith(prefix):
        return int(name[len(prefix) :].split(".", 1)[0]) >= n_layers - last_n
    return False


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for the temperature, biases, norms, embeddings and every parameter under 2-D."""
    bare = _strip_wrappers(name)
    leaf = bare.rsplit(".", 1)[-1]
    return (
        param.ndim < 2
        or leaf == "logit_scale"
        or leaf == "bias"
        or "embedding" in bare
        or "norm" in bare  # layer_norm1/2, final_layer_norm, post_layernorm
        or "layrnorm" in bare  # CLIP's pre_layrnorm is spelt this way
    )


def split_by_decay(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[str], list[str]]:
    """Names of trainable parameters that get weight decay, and of those exempt from it."""
    decay, exempt = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (exempt if is_no_decay(name, param) else decay).append(name)
    return decay, exempt


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over trainable parameters: decayed matrices, and everything exempt."""
    params = dict(model.named_parameters())
    decay, exempt = split_by_decay(params.items())
    if not decay and not exempt:
        raise ValueError("no trainable parameters: the strategy froze everything")
    return [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay},
        {"params": [params[n] for n in exempt], "weight_decay": 0.0},
    ]


@torch.no_grad()
def clamp_logit_scale(model: nn.Module, max_log_scale: float = MAX_LOG_SCALE) -> None:
    """Keep CLIP's log temperature scale in [0, ln 100] (scale in [1, 100]), as open_clip does.

    Works on a wrapped or sharded model: it finds the parameter by name on every process.
    """
    for name, param in model.named_parameters():
        if name.endswith("logit_scale"):
            param.clamp_(0.0, max_log_scale)
