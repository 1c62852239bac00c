"""The training loop on Accelerate: steps, checkpoints, resume, evaluation, logging.

Data order is a pure function of (seed, epoch, step), so a run resumed from a checkpoint
sees exactly the batches the uninterrupted run would have seen; the model, optimizer,
scheduler and RNG states come back through ``accelerator.load_state``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from tqdm.auto import tqdm

from workbench import schema
from workbench.io import atomic_write_json, atomic_write_text
from workbench.models import refuse_unsafe_pickles
from workbench.train.accumulate import contrastive_step, split_micro_batches
from workbench.train.pairs import PairData
from workbench.train.strategies import clamp_logit_scale

_STEP_DIR = re.compile(r"^step_(\d{7})$")
TRAINER_STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


class LossNotFinite(RuntimeError):
    """The loss became NaN or infinite; the update of that step was not applied."""


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory; the message says which settings to lower."""


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    steps_per_epoch: int
    per_device_batch_size: int
    accumulation_steps: int = 1
    seed: int = 0
    max_grad_norm: float | None = None
    logging_steps: int = 10
    eval_steps: int = 0
    checkpoint_steps: int = 0
    keep_checkpoints: int = 2

    @property
    def local_batch(self) -> int:
        return self.per_device_batch_size * self.accumulation_steps


# ---------------------------------------------------------------------------- data order


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled row order of one epoch, the same on every process and every resume."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def local_rows(order: torch.Tensor, step_in_epoch: int, local_batch: int, rank: int, world: int) -> torch.Tensor:
    """Rows of this process for one step: its slice of the global batch, ranks in order.

    The concatenation over ranks is the global batch, which is what the all-gather in
    the loss reassembles; the last partial global batch of an epoch is dropped so every
    process has the same batch size.
    """
    start = step_in_epoch * local_batch * world + rank * local_batch
    return order[start : start + local_batch]


# ---------------------------------------------------------------------------- checkpoints


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / schema.RUN_CHECKPOINTS_DIR


def complete_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first. Half-written ones are ignored."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAINER_STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1][1] if done else None


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / TRAINER_STATE_FILE).read_text())


def load_checkpoint(accelerator, checkpoint: str | os.PathLike) -> None:
    """``accelerator.load_state`` after checking every pickle in the folder holds only tensors.

    Accelerate unpickles registered objects and RNG states without the weights-only guard;
    a planted payload would run. :func:`workbench.models.refuse_unsafe_pickles` raises first.
    """
    refuse_unsafe_pickles(checkpoint)
    accelerator.load_state(str(checkpoint))


def save_checkpoint(accelerator, run_dir: str | os.PathLike, step: int, trainer_state: dict) -> Path:
    """``accelerator.save_state`` into a temporary folder, then rename it to ``step_XXXXXXX``.

    Every process calls this (each writes its RNG state). The trainer state file is
    written last and the rename is atomic, so a kill at any moment leaves either no
    ``step_`` folder or a complete one.
    """
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step:07d}"
    tmp = root / f".step_{step:07d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(tmp / TRAINER_STATE_FILE, trainer_state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    except OSError as err:
        # A full or failing disk: drop the partial folder so the last complete checkpoint stays the one resumed.
        shutil.rmtree(tmp, ignore_errors=True)
        kept = last_checkpoint(run_dir)
        raise type(err)(
            err.errno,
            f"checkpoint at step {step} could not be written ({err.strerror or err}); "
            f"kept: {kept or 'no checkpoint yet'}; free space and rerun with --resume",
        ) from err
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(run_dir: str | os.PathLike, keep: int, protect: set[int]) -> None:
    """Remove all but the ``keep`` newest complete checkpoints, never a protected step."""
    done = complete_checkpoints(run_dir)
    for step, path in done[: max(0, len(done) - keep)]:
        if step not in protect:
            shutil.rmtree(path, ignore_errors=True)
    for stale in checkpoints_dir(run_dir).glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# ---------------------------------------------------------------------------- log


class TrainLog:
    """``train_log.jsonl``: one JSON object per logged step, written by the main process.

    Each record is one ``write`` of a whole line followed by a flush; readers skip a
    trailing partial line.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool):
        self.path = Path(path)
        self.enabled = enabled

    def keep_until(self, step: int) -> None:
        """On resume: drop records the killed run wrote after its last checkpoint."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError):
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


# ---------------------------------------------------------------------------- evaluation view


class EncoderView:
    """Presents a prepared :class:`ContrastiveEncoder` with the methods ``workbench.embed`` calls.

    Evaluation then runs through the wrapped module's forward, which DDP and FSDP need,
    and through the same encoding code as every other evaluation in the workbench.
    """

    def __init__(self, wrapped: nn.Module, config):
        self.wrapped = wrapped
        self.config = config

    def parameters(self):
        return self.wrapped.parameters()

    def get_image_features(self, pixel_values: torch.Tensor):
        image, _, _ = self.wrapped(pixel_values=pixel_values)
        return SimpleNamespace(pooler_output=image)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        _, text, _ = self.wrapped(input_ids=input_ids, attention_mask=attention_mask)
        return SimpleNamespace(pooler_output=text)


# ---------------------------------------------------------------------------- loop


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def oom_message(step: int, per_device_batch_size: int, accumulation_steps: int) -> str:
    return (
        f"out of accelerator memory at step {step} with --per-device-batch-size {per_device_batch_size}: "
        f"lower it (e.g. {max(1, per_device_batch_size // 2)}) and raise --accumulation-steps "
        f"(e.g. {accumulation_steps * 2}) to keep the same global batch (exact for this loss), "
        "and/or add --gradient-checkpointing or --mixed-precision bf16"
    )


def _not_finite(what: str, step: int, epoch: int, run_dir: str | os.PathLike) -> LossNotFinite:
    last = last_checkpoint(run_dir)
    return LossNotFinite(
        f"{what} at step {step} (epoch {epoch}); stopped before applying that update. "
        f"Last good checkpoint: {last if last else 'none written yet'}. "
        "Try a lower --learning-rate, --max-grad-norm, or bf16 instead of fp16."
    )


def train_loop(
    accelerator,
    encoder: nn.Module,
    optimizer,
    scheduler,
    pairs: PairData,
    image_processor,
    settings: LoopSettings,
    run_dir: str | os.PathLike,
    *,
    trainer_state: dict,
    image_features: torch.Tensor | None = None,
    evaluate: Callable[[], float] | None = None,
    set_train_mode: Callable[[], None] | None = None,
) -> dict:
    """Run optimizer steps from ``trainer_state["step"]`` to ``settings.total_steps``.

    ``image_features`` (N, D), when given, replaces the vision tower (frozen image tower).
    ``evaluate`` returns validation accuracy; the best step's checkpoint is protected.
    Returns the final trainer state: step, best_step, best_val.
    """
    state = dict(trainer_state)
    world, rank = accelerator.num_processes, accelerator.process_index
    device = accelerator.device
    log = TrainLog(Path(run_dir) / schema.RUN_TRAIN_LOG, accelerator.is_main_process)
    set_train_mode = set_train_mode or encoder.train
    set_train_mode()
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    step = int(state["step"])
    bar = tqdm(
        total=settings.total_steps, initial=step, desc="fine-tuning", unit="step",
        disable=not accelerator.is_local_main_process,
    )
    order_epoch, order = -1, None
    window_start, window_steps = time.perf_counter(), 0
    last_loss = float("nan")

    while step < settings.total_steps:
        epoch, in_epoch = divmod(step, settings.steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(len(pairs), settings.seed, epoch), epoch
        rows = local_rows(order, in_epoch, settings.local_batch, rank, world)
        batch = pairs.text_batch(rows, device)
        if image_features is not None:
            batch["image_features"] = image_features[rows].to(device)
        else:
            batch["pixel_values"] = pairs.pixel_batch(rows, image_processor, device)
        micro = split_micro_batches(batch, settings.per_device_batch_size)
        try:
            loss = contrastive_step(
                encoder, micro, backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(encoder)
            )
        except RuntimeError as err:
            if _is_oom(err):
                raise OutOfMemory(oom_message(step + 1, settings.per_device_batch_size, settings.accumulation_steps)) from err
            raise
        loss = accelerator.reduce(loss.detach().float(), reduction="mean")
        if not torch.isfinite(loss):
            raise _not_finite(f"loss is {loss.item()}", step + 1, epoch + 1, run_dir)
        # Always measured (an infinite max clips nothing): an inf/NaN gradient must stop the
        # run before the update, or NaN weights would be saved as the newest checkpoint.
        # Under fp16 the gradient scaler owns that case: it skips the step and lowers the scale.
        grad_norm = accelerator.clip_grad_norm_(trainable, settings.max_grad_norm or float("inf"))
        fp16_scaler = getattr(accelerator, "scaler", None) is not None
        if grad_norm is not None and not fp16_scaler and not torch.isfinite(torch.as_tensor(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            raise _not_finite(f"gradient norm is {float(grad_norm)}", step + 1, epoch + 1, run_dir)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale(encoder)
        step += 1
        window_steps += 1
        last_loss = float(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}")

        val = None
        if evaluate is not None and ((settings.eval_steps and step % settings.eval_steps == 0) or step == settings.total_steps):
            encoder.eval()
            val = float(evaluate())
            set_train_mode()
            if state.get("best_val") is None or val > state["best_val"]:
                state["best_val"], state["best_step"] = val, step
        state["step"] = step

        if step % max(1, settings.logging_steps) == 0 or val is not None or step == settings.total_steps:
            elapsed = time.perf_counter() - window_start
            record = {
                "step": step,
                "epoch": round(step / settings.steps_per_epoch, 4),
                "loss": last_loss,
                "logit_scale": float(_log_scale(encoder).exp()),
                "lr": float(scheduler.get_last_lr()[0]),
                "val_accuracy": val,
                "samples_per_s": round(window_steps * settings.local_batch * world / max(elapsed, 1e-9), 2),
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)  # before clipping
            log.append(record)
            accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=step)
            window_start, window_steps = time.perf_counter(), 0

        new_best = val is not None and state.get("best_step") == step
        periodic = settings.checkpoint_steps and step % settings.checkpoint_steps == 0
        if periodic or new_best or step == settings.total_steps:
            save_checkpoint(accelerator, run_dir, step, state)
            if accelerator.is_main_process:
                protect = {state["best_step"]} if state.get("best_step") else set()
                prune_checkpoints(run_dir, settings.keep_checkpoints, protect)
            accelerator.wait_for_everyone()
    bar.close()
    return state


def _log_scale(encoder: nn.Module) -> torch.Tensor:
    for name, p in encoder.named_parameters():
        if name.endswith("logit_scale") and p.numel() == 1:  # a shard can be empty under FSDP
            return p.detach().float().reshape(())
    return torch.tensor(math.nan)
