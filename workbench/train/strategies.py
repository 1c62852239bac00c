"""What gets trained: each strategy is one small object in :data:`STRATEGIES`, looked up by name.

A strategy says which parameters it trains, how it wraps the model (LoRA: peft), whether
the image features can be computed once and cached (frozen image tower), whether the
vision tower stays in eval mode, how the trained weights become a plain ``CLIPModel`` for
saving (LoRA: adapter saved, then merged), and which settings it accepts. The run and
the loop ask the strategy; adding one means adding a class here and registering it.

Also the optimizer parameter groups (no weight decay for the temperature, biases, norms,
embeddings and every parameter with fewer than two dimensions) and the temperature clamp.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from workbench import schema
from workbench.io import atomic_dir
from workbench.train.encoder import ContrastiveEncoder

TOWERS: tuple[str, ...] = ("text", "vision")
# peft has no default target list for CLIP; the attention projections of both towers are
# what most CLIP LoRA work adapts (fc1/fc2 can be added per tower).
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
MAX_LOG_SCALE = math.log(100.0)

# Final norms and projections stay trainable when only the last N blocks are unfrozen.
_TOWER_HEADS = {
    "text": ("text_model.final_layer_norm.", "text_projection."),
    "vision": ("vision_model.post_layernorm.", "visual_projection."),
}
_TOWER_PREFIXES = {"text": ("text_model.", "text_projection."), "vision": ("vision_model.", "visual_projection.")}


@dataclass(frozen=True)
class StrategySettings:
    """The knobs a strategy reads (the matching ``FinetuneConfig`` fields)."""

    unfreeze_last_blocks: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS)


class Strategy:
    """Base of every strategy. Subclasses set the class attributes and override what differs."""

    name: str = ""
    description: str = ""
    # Image features never change during training, so they can be embedded once up front.
    caches_image_features: bool = False
    # The vision tower is kept in eval mode while the rest trains (nothing of it changes).
    vision_tower_in_eval: bool = False
    # Above this learning rate a pretrained CLIP is usually damaged (the recipe warns);
    # None: no such ceiling (adapters train well at higher rates).
    max_pretrained_learning_rate: float | None = 1e-4

    def validate(self, settings: StrategySettings) -> None:
        """Raise ``ValueError`` naming the flag and the fix; cheap, called before any compute."""
        if settings.unfreeze_last_blocks < 0:
            raise ValueError(
                f"unfreeze_last_blocks must be >= 0 (0 trains every block), got {settings.unfreeze_last_blocks}"
            )

    def check_model(self, model: nn.Module, settings: StrategySettings) -> None:
        """Checks that need the loaded model but no data (so a bad setting fails before data loads)."""

    def prepare(self, model: nn.Module, settings: StrategySettings) -> nn.Module:
        """Set ``requires_grad`` (and wrap, where the strategy does) and return the model to train."""
        raise NotImplementedError

    def set_train_mode(self, wrapped: nn.Module, clip: nn.Module) -> None:
        """Training mode for ``wrapped`` (the prepared module), except what this strategy keeps in eval.

        ``clip`` is the model inside ``wrapped`` as :meth:`prepare` returned it.
        """
        wrapped.train()
        if self.vision_tower_in_eval:
            _clip_of(clip).vision_model.eval()

    def trained_model(self, clip_config, state_dict: dict[str, torch.Tensor], settings: StrategySettings,
                      run_dir: str | os.PathLike) -> nn.Module:
        """A plain ``CLIPModel`` on the CPU in eval mode holding the trained weights, ready for ``save_pretrained``.

        ``state_dict`` is the gathered state of the :class:`ContrastiveEncoder` (keys ``clip.…``),
        so this works the same after DDP and FSDP.
        """
        from transformers import CLIPModel

        fresh = CLIPModel(clip_config)
        _load_encoder_state(fresh, state_dict)
        return fresh.eval()


class TowerStrategy(Strategy):
    """Train whole towers (optionally only their last N blocks); the others stay fixed."""

    def __init__(self, name: str, towers: Sequence[str], description: str):
        self.name = name
        self.towers = tuple(towers)
        self.description = description
        # With the image side fixed, its features and its eval mode are fixed too.
        self.caches_image_features = self.vision_tower_in_eval = "vision" not in self.towers

    def prepare(self, model: nn.Module, settings: StrategySettings) -> nn.Module:
        self.validate(settings)
        for name, param in model.named_parameters():
            param.requires_grad_(_trainable(name, self.towers, settings.unfreeze_last_blocks, model))
        if self.vision_tower_in_eval:
            model.vision_model.eval()
        return model


class LoraStrategy(Strategy):
    """Low-rank adapters (peft) on chosen linear modules of both towers; the temperature stays fixed."""

    name = "lora"
    description = "LoRA adapters (peft) on the attention projections of both towers by default"
    max_pretrained_learning_rate = None

    def validate(self, settings: StrategySettings) -> None:
        super().validate(settings)
        if settings.unfreeze_last_blocks:
            raise ValueError("unfreeze_last_blocks applies to strategies full and frozen-image, not lora")
        if settings.lora_r < 1:
            raise ValueError(f"--lora-r must be at least 1, got {settings.lora_r}")
        if not settings.lora_targets:
            raise ValueError("lora_targets is empty; name modules such as " + ", ".join(DEFAULT_LORA_TARGETS))

    def check_model(self, model: nn.Module, settings: StrategySettings) -> None:
        resolve_lora_targets(model, settings.lora_targets)

    def prepare(self, model: nn.Module, settings: StrategySettings) -> nn.Module:
        """A peft model around ``model`` (which peft modifies in place)."""
        from peft import LoraConfig, get_peft_model

        self.validate(settings)
        modules = resolve_lora_targets(model, settings.lora_targets)
        # No task_type: peft's task wrappers assume a language model and break CLIP's forward.
        config = LoraConfig(
            r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout, target_modules=modules
        )
        return get_peft_model(model, config)

    def trained_model(self, clip_config, state_dict, settings, run_dir):
        """The adapter is written to ``<run>/adapter/`` first, then merged into a plain CLIPModel."""
        from transformers import CLIPModel

        wrapped = self.prepare(CLIPModel(clip_config), settings)
        _load_encoder_state(wrapped, state_dict)
        with atomic_dir(Path(run_dir) / schema.RUN_ADAPTER_DIR) as tmp:
            # The adapters only: CLIP's embedding layers are not adapted (peft otherwise looks for the base's config).
            wrapped.save_pretrained(str(tmp), save_embedding_layers=False)
        return wrapped.merge_and_unload().eval()


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        TowerStrategy("full", TOWERS, "every parameter of both towers (or their last N blocks) and the temperature"),
        TowerStrategy("frozen-image", ("text",), "LiT: the image tower and its projection stay fixed; text side trains"),
        LoraStrategy(),
    )
}


DEFAULT_STRATEGY = next(iter(STRATEGIES))  # full fine-tuning


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


def validate_strategy(name: str, settings: StrategySettings | None = None) -> Strategy:
    """Look ``name`` up and check ``settings`` against it; returns the strategy."""
    strategy = get_strategy(name)
    strategy.validate(settings or StrategySettings())
    return strategy


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
    """``get_strategy(strategy).prepare(model, ...)`` with the settings as keywords."""
    settings = StrategySettings(
        unfreeze_last_blocks=unfreeze_last_blocks, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, lora_targets=tuple(lora_targets),
    )
    return get_strategy(strategy).prepare(model, settings)


def _clip_of(model: nn.Module) -> nn.Module:
    """The CLIPModel inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _load_encoder_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    ContrastiveEncoder(model).load_state_dict({k: v.to("cpu") for k, v in state_dict.items()})


# ---------------------------------------------------------------------------- towers and LoRA targets


def _strip_wrappers(name: str) -> str:
    """Parameter name relative to the CLIPModel (drops peft / encoder prefixes)."""
    for prefix in ("clip.", "module.", "base_model.model.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


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


def _num_layers(model: nn.Module, tower: str) -> int:
    sub = model.text_model if tower == "text" else model.vision_model
    return len(sub.encoder.layers)


def _trainable(name: str, towers: Sequence[str], last_n: int, model: nn.Module) -> bool:
    if name == "logit_scale":
        return True
    tower = next((t for t, prefixes in _TOWER_PREFIXES.items() if name.startswith(prefixes)), None)
    if tower is None or tower not in towers:
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


# ---------------------------------------------------------------------------- optimizer groups, temperature


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
