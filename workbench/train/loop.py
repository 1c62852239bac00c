"""The training loop on Accelerate: steps, checkpoints, resume, evaluation, logging.

Data order is a pure function of (seed, epoch, step), so a run resumed from a checkpoint
sees exactly the batches the uninterrupted run would have seen; the model, optimizer,
scheduler and RNG states come back through ``accelerator.load_state``.

What goes to disk, and when:

* ``checkpoints/step_N/``: only every ``checkpoint_steps`` steps (never when it is 0), and
  only what training changes: the trainable parameters (every weight for full fine-tuning,
  the text side for a frozen image tower, the adapters for LoRA), their optimizer state,
  the scheduler and RNG states. The frozen weights come back from the base model on
  resume; a digest of them in ``trainer_state.json`` refuses a resume onto other weights.
* ``checkpoints/best_step_N/``: when the best validation step is to be kept as the final
  model, the trainable weights of each new best step (no optimizer state), kept while a
  kept checkpoint or the running state still names it, removed once the run has saved its
  final model.
* No checkpoint at the last step: the final model is saved once, as ``model/``.
"""

from __future__ import annotations

import hashlib
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
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from workbench import schema
from workbench.io import atomic_dir, atomic_write_json, atomic_write_text
from workbench.models import refuse_unsafe_pickles
from workbench.train.accumulate import contrastive_step, split_micro_batches
from workbench.train.align import Alignment, aligned_contrastive_step
from workbench.train.pairs import PairData
from workbench.train.strategies import clamp_logit_scale

_STEP_DIR = re.compile(r"^step_(\d{7})$")
_BEST_DIR = re.compile(r"^best_step_(\d{7})$")
TRAINER_STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
BEST_STATE_FILE = "best.json"  # written last in a best-step snapshot: step and validation accuracy
WEIGHTS_FILE = "model.safetensors"  # accelerate's name for the first model's weights in a checkpoint


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
    # Snapshot the trainable weights of each new best validation step (for --select-best).
    keep_best: bool = False

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


def prune_checkpoints(run_dir: str | os.PathLike, keep: int, protect: set[int] = frozenset()) -> None:
    """Remove all but the ``keep`` newest complete checkpoints, never a protected step."""
    done = complete_checkpoints(run_dir)
    for step, path in done[: max(0, len(done) - keep)]:
        if step not in protect:
            shutil.rmtree(path, ignore_errors=True)
    for stale in checkpoints_dir(run_dir).glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# ---------------------------------------------------------------------------- what a checkpoint holds


def trainable_parameter_names(module: nn.Module) -> set[str]:
    return {name for name, param in module.named_parameters() if param.requires_grad}


def frozen_weights_digest(module: nn.Module) -> str:
    """BLAKE2b of every frozen parameter (name, dtype, shape, bytes), in name order.

    Checkpoints leave the frozen weights out; this digest, stored with each checkpoint,
    lets a resume refuse a base model whose frozen weights differ. Call it on the whole
    (unsharded) model, before ``accelerator.prepare``.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            continue
        data = param.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(param.shape)}\n".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def keep_only_trainable_weights_in_checkpoints(accelerator) -> None:
    """Make ``save_state`` / ``load_state`` write and read only the trainable parameters.

    The optimizer state already covers only those; without this, every checkpoint of a
    LoRA run would carry the whole frozen model. On load, every trainable parameter must
    be in the checkpoint and nothing else may be (a checkpoint of another strategy is
    refused); frozen parameters keep the values loaded from the base model. Checkpoints
    that hold the whole model (written before this rule) still load. FSDP and DeepSpeed
    checkpoints are written by their own code and are left as they are.
    """
    def save_trainable(models, weights, output_dir) -> None:
        if len(weights) != len(models):  # FSDP / DeepSpeed: no state dicts to filter here
            return
        for i, model in enumerate(models):
            keep = trainable_parameter_names(model)
            weights[i] = {name: tensor for name, tensor in weights[i].items() if name in keep}

    def load_trainable(models, input_dir) -> None:
        files = [Path(input_dir) / (WEIGHTS_FILE if i == 0 else WEIGHTS_FILE.replace(".", f"_{i}.")) for i in range(len(models))]
        if not all(f.is_file() for f in files):
            return  # not written by save_trainable (pickled weights): accelerate's own loader
        for model, file in zip(models, files):
            state = load_file(str(file), device="cpu")
            missing = sorted(trainable_parameter_names(model) - set(state))
            if missing:
                raise ValueError(
                    f"{file} lacks {len(missing)} trainable parameter(s) (first: {missing[0]}); it was written by a run "
                    "with another --strategy or model: resume with the same settings, or start a new --output-dir"
                )
            result = model.load_state_dict(state, strict=False)
            if result.unexpected_keys:
                raise ValueError(
                    f"{file} holds {len(result.unexpected_keys)} tensor(s) this model does not have "
                    f"(first: {result.unexpected_keys[0]}); resume with the same --model and --strategy"
                )
        models.clear()  # loaded here; accelerate's loader would insist on the whole state dict

    accelerator.register_save_state_pre_hook(save_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


# ---------------------------------------------------------------------------- best-step snapshots


def best_snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete best-step snapshot, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _BEST_DIR.match(p.name)
        if m and (p / BEST_STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_best_snapshot(accelerator, encoder: nn.Module, run_dir: str | os.PathLike, step: int, val: float) -> Path:
    """Write the trainable weights of ``encoder`` (unwrapped names, ``clip.…``) as ``best_step_N/``.

    Every process calls this (FSDP gathers the weights); the main process writes. No
    optimizer state: the snapshot only ever becomes the final model.
    """
    state = accelerator.get_state_dict(encoder)
    final = checkpoints_dir(run_dir) / f"best_step_{step:07d}"
    if accelerator.is_main_process:
        keep = trainable_parameter_names(accelerator.unwrap_model(encoder))
        weights = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k in keep}
        with atomic_dir(final) as tmp:
            save_file(weights, str(tmp / WEIGHTS_FILE))
            atomic_write_json(tmp / BEST_STATE_FILE, {"step": step, "val_accuracy": val})
    accelerator.wait_for_everyone()
    return final


def load_best_weights(run_dir: str | os.PathLike, step: int) -> dict[str, torch.Tensor]:
    """The trainable weights snapshotted at ``step`` (``ValueError`` naming the folder when absent)."""
    folder = checkpoints_dir(run_dir) / f"best_step_{step:07d}"
    if not (folder / BEST_STATE_FILE).is_file():
        raise ValueError(
            f"the best validation step is {step} but {folder} is missing or incomplete; "
            "rerun with --select-best false to keep the last step's weights"
        )
    return load_file(str(folder / WEIGHTS_FILE), device="cpu")


def prune_best_snapshots(run_dir: str | os.PathLike, keep: set[int]) -> None:
    """Remove best-step snapshots whose step is not in ``keep`` (and half-written ones)."""
    for step, path in best_snapshots(run_dir):
        if step not in keep:
            shutil.rmtree(path, ignore_errors=True)
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for stale in root.glob(".best_step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def best_steps_still_needed(run_dir: str | os.PathLike, state: dict) -> set[int]:
    """Best steps a resume could still select: the running state's and each kept checkpoint's."""
    steps = {state.get("best_step")}
    steps |= {read_trainer_state(path).get("best_step") for _, path in complete_checkpoints(run_dir)}
    return {s for s in steps if s}


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
    epoch_order_for: Callable[[int, int], torch.Tensor] | None = None,
    alignment: Alignment | None = None,
    row_weights: torch.Tensor | None = None,
) -> dict:
    """Run optimizer steps from ``trainer_state["step"]`` to ``settings.total_steps``.

    ``image_features`` (N, D), when given, replaces the vision tower (frozen image tower).
    ``evaluate`` returns validation accuracy; the best step's checkpoint is protected.
    ``epoch_order_for(seed, epoch)`` replaces the plain shuffle (balanced fine-tuning: a
    ``BalancePlan.epoch_order``); ``alignment`` adds the distribution-alignment term;
    ``row_weights`` (N,) weight each pair's loss (balanced fine-tuning by reweighting).
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
            if epoch_order_for is None:
                order = epoch_order(len(pairs), settings.seed, epoch)
            else:
                order = epoch_order_for(settings.seed, epoch)
            order_epoch = epoch
        rows = local_rows(order, in_epoch, settings.local_batch, rank, world)
        batch = pairs.text_batch(rows, device)
        if image_features is not None:
            batch["image_features"] = image_features[rows].to(device)
        else:
            batch["pixel_values"] = pairs.pixel_batch(rows, image_processor, device)
        micro = split_micro_batches(batch, settings.per_device_batch_size)
        align_loss = None
        try:
            weights = row_weights[rows].to(device) if row_weights is not None else None
            if alignment is None:
                loss = contrastive_step(
                    encoder, micro, backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(encoder),
                    row_weights=weights,
                )
            else:
                loss, align_loss = aligned_contrastive_step(
                    encoder, micro, alignment.group_codes[rows].to(device), weight=alignment.weight,
                    blur=alignment.blur, backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(encoder),
                    row_weights=weights,
                )
        except RuntimeError as err:
            if _is_oom(err):
                raise OutOfMemory(oom_message(step + 1, settings.per_device_batch_size, settings.accumulation_steps)) from err
            raise
        loss = accelerator.reduce(loss.detach().float(), reduction="mean")
        if not torch.isfinite(loss):
            raise _not_finite(f"loss is {loss.item()}", step + 1, epoch + 1, run_dir)
        if align_loss is not None:
            # The same global-batch term on every process; reduced only to move it off the device.
            align_loss = accelerator.reduce(align_loss.float(), reduction="mean")
            if not torch.isfinite(align_loss):
                raise _not_finite(f"alignment term is {align_loss.item()}", step + 1, epoch + 1, run_dir)
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
            if align_loss is not None:
                record["align_loss"] = float(align_loss)  # unweighted; "loss" stays the contrastive loss
            log.append(record)
            accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=step)
            window_start, window_steps = time.perf_counter(), 0

        new_best = val is not None and state.get("best_step") == step
        if settings.keep_best and new_best and step != settings.total_steps:
            # At the last step the running weights are the best ones: nothing to snapshot.
            save_best_snapshot(accelerator, encoder, run_dir, step, val)
        periodic = settings.checkpoint_steps and step % settings.checkpoint_steps == 0
        if periodic:
            save_checkpoint(accelerator, run_dir, step, state)
            if accelerator.is_main_process:
                prune_checkpoints(run_dir, settings.keep_checkpoints)
        if (periodic or new_best) and settings.keep_best and accelerator.is_main_process:
            prune_best_snapshots(run_dir, best_steps_still_needed(run_dir, state))
        if periodic or new_best:
            accelerator.wait_for_everyone()
    bar.close()
    return state


def _log_scale(encoder: nn.Module) -> torch.Tensor:
    for name, p in encoder.named_parameters():
        if name.endswith("logit_scale") and p.numel() == 1:  # a shard can be empty under FSDP
            return p.detach().float().reshape(())
    return torch.tensor(math.nan)
