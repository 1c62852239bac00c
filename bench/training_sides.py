"""The two training paths the benchmarks compare, each timed per epoch.

* ``run_baseline``: what a user writes with the Hugging Face example ``run_clip.py``: captions
  tokenised once padded to the maximum length, a ``torch.utils.data.Dataset`` whose
  ``__getitem__`` decodes the PIL image and runs the CLIP image processor per example, a
  collate function, and ``transformers.Trainer`` whose ``compute_loss`` calls
  ``CLIPModel(..., return_loss=True)``. Frozen image tower: ``requires_grad=False`` on the
  vision tower and visual projection. LoRA: ``peft`` on the same target modules.
* ``run_ours``: the workbench's path (``workbench.train``): ``build_pair_data`` (decode and
  resize once, captions tokenised once and padded per batch), ``apply_strategy``,
  ``ContrastiveEncoder`` and ``train_loop``; with a frozen image tower the image embeddings
  are computed once and epochs never run the vision tower (``cache_images=False`` turns
  that off, to measure what the cache buys).

Both load the model before their clock starts; epoch 1 includes each side's data set-up
(tokenising, decoding) and both write one checkpoint per epoch (``train_loop`` with
``checkpoint_steps`` = steps per epoch; the Trainer gets ``save_strategy="epoch"``), unless
``RunSpec.checkpoint_each_epoch`` is off (then neither does). Each epoch is timed twice:
wall clock, and CPU time of the process (``time.process_time``), which other processes on a
shared machine disturb far less.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from workbench.train.strategies import DEFAULT_LORA_TARGETS, get_strategy

LR, WEIGHT_DECAY, BETA2, EPS, MAX_GRAD_NORM = 1e-5, 0.1, 0.98, 1e-6, 1.0


@dataclass
class RunSpec:
    model: str
    strategy: str
    batch: int
    epochs: int
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    cache_images: bool = True  # ours only: frozen image tower uses cached image embeddings
    checkpoint_each_epoch: bool = True  # both sides write one resumable checkpoint per epoch
    precision: str = "no"  # "no" (fp32) or "bf16" (autocast) on both sides
    gradient_checkpointing: bool = False  # both sides: non-reentrant activation checkpointing of every layer


def _resolved(model: str) -> str:
    from workbench.models import resolve_model_path

    return resolve_model_path(model)


# ---------------------------------------------------------------------------- baseline


class PerExampleImageDataset(torch.utils.data.Dataset):
    """run_clip.py's shape: token ids prepared up front, the image decoded and processed per item."""

    def __init__(self, split, input_ids, attention_mask, image_processor):
        self.split = split
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        value = self.split[int(i)]["image"]
        data = value["bytes"] if value.get("bytes") is not None else open(value["path"], "rb").read()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}


def collate(examples: list[dict]) -> dict:
    return {k: torch.stack([torch.as_tensor(e[k]) for e in examples]) for k in examples[0]}


def baseline_dataset(split, processor, max_length: int) -> PerExampleImageDataset:
    tok = processor.tokenizer(
        list(split["caption"]), max_length=max_length, padding="max_length", truncation=True, return_tensors="pt"
    )
    return PerExampleImageDataset(split, tok["input_ids"], tok["attention_mask"], processor.image_processor)


def baseline_model(spec: RunSpec):
    from transformers import CLIPModel, CLIPProcessor

    path = _resolved(spec.model)
    torch.manual_seed(spec.seed)
    model = CLIPModel.from_pretrained(path, use_safetensors=True)
    processor = CLIPProcessor.from_pretrained(path)
    if spec.strategy == "frozen-image":
        for p in list(model.vision_model.parameters()) + list(model.visual_projection.parameters()):
            p.requires_grad_(False)
    elif spec.strategy == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=0.0, target_modules=list(spec.lora_targets))
        )
    return model, processor


class EpochTimes(dict):
    """``{"wall": [s per epoch], "cpu": [CPU s per epoch]}``."""

    @classmethod
    def from_marks(cls, marks: list[tuple[float, float]]) -> "EpochTimes":
        return cls(wall=[b[0] - a[0] for a, b in zip(marks, marks[1:])], cpu=[b[1] - a[1] for a, b in zip(marks, marks[1:])])


def _mark() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run_baseline(spec: RunSpec, split) -> EpochTimes:
    """Seconds per epoch of the Trainer baseline (epoch 1 includes tokenising)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class ClipLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs, return_loss=True)
            return (outputs.loss, outputs) if return_outputs else outputs.loss

    marks: list[tuple[float, float]] = []

    class EpochClock(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            marks.append(_mark())

    model, processor = baseline_model(spec)
    out = tempfile.mkdtemp(prefix="bench-trainer-")
    try:
        marks.append(_mark())
        context = int(model.config.text_config.max_position_embeddings)
        train = baseline_dataset(split, processor, max_length=context)
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=spec.batch,
            num_train_epochs=spec.epochs,
            learning_rate=LR,
            weight_decay=WEIGHT_DECAY,
            adam_beta2=BETA2,
            adam_epsilon=EPS,
            max_grad_norm=MAX_GRAD_NORM,
            lr_scheduler_type="constant",
            dataloader_drop_last=True,  # as ours: every step sees a full contrastive batch
            dataloader_num_workers=0,
            remove_unused_columns=False,
            save_strategy="epoch" if spec.checkpoint_each_epoch else "no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=spec.seed,
            bf16=spec.precision == "bf16",
            fp16=spec.precision == "fp16",
            gradient_checkpointing=spec.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if spec.gradient_checkpointing else None,
        )
        trainer = ClipLossTrainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[EpochClock()])
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints a summary; stdout is for the JSON
            trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return EpochTimes.from_marks(marks)


# ---------------------------------------------------------------------------- ours


def run_ours(spec: RunSpec, split) -> EpochTimes:
    """Seconds per epoch of the workbench path (epoch 1 includes decoding, tokenising, image caching)."""
    from accelerate import Accelerator

    from workbench.embed import encode_images
    from workbench.models import load_clip
    from workbench.train import loop as L
    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.pairs import build_pair_data
    from workbench.train.run import build_adamw
    from workbench.train.strategies import apply_strategy, param_groups

    torch.manual_seed(spec.seed)
    model, processor = load_clip(spec.model)
    run_dir = tempfile.mkdtemp(prefix="bench-ours-")
    marks: list[tuple[float, float]] = []
    try:
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=spec.precision)
        model.to(accelerator.device)
        marks.append(_mark())
        context = int(model.config.text_config.max_position_embeddings)
        pairs = build_pair_data(split, processor, max_length=context, progress=False)
        clip_config = model.config
        if spec.gradient_checkpointing:  # as finetune does (workbench.train.run), before the strategy wraps the model
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model = apply_strategy(model, spec.strategy, lora_r=spec.lora_r, lora_alpha=spec.lora_alpha,
                               lora_targets=spec.lora_targets)
        encoder = ContrastiveEncoder(model)
        optimizer = build_adamw(param_groups(encoder, WEIGHT_DECAY), LR, BETA2, accelerator.device)  # as finetune does
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        encoder, optimizer = accelerator.prepare(encoder, optimizer)
        L.keep_only_trainable_weights_in_checkpoints(accelerator)  # as finetune does
        frozen = get_strategy(spec.strategy).caches_image_features

        def set_train_mode() -> None:
            encoder.train()
            if frozen:
                accelerator.unwrap_model(encoder).clip.vision_model.eval()

        image_features = None
        if frozen and spec.cache_images:
            encoder.eval()
            image_features = encode_images(L.EncoderView(encoder, clip_config), pairs.pixels, processor.image_processor, batch_size=256)
        steps_per_epoch = len(pairs) // spec.batch
        state = {"step": 0, "best_step": None, "best_val": None}
        for epoch in range(spec.epochs):
            settings = L.LoopSettings(
                total_steps=(epoch + 1) * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                per_device_batch_size=spec.batch, seed=spec.seed, max_grad_norm=MAX_GRAD_NORM,
                logging_steps=steps_per_epoch, checkpoint_steps=steps_per_epoch if spec.checkpoint_each_epoch else 0,
                keep_checkpoints=1,
            )
            state = L.train_loop(accelerator, encoder, optimizer, scheduler, pairs, processor.image_processor, settings,
                                 run_dir, trainer_state=state, image_features=image_features, set_train_mode=set_train_mode)
            marks.append(_mark())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return EpochTimes.from_marks(marks)


# ---------------------------------------------------------------------------- same work


def same_loss_check(model_ref: str, split, batch: int) -> dict:
    """Loss of the first ``batch`` rows through both paths on the untrained model: they must agree."""
    from workbench.models import load_clip
    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.loss import contrastive_loss
    from workbench.train.pairs import build_pair_data

    model, processor = load_clip(model_ref)
    rows = split.select(range(batch))
    context = int(model.config.text_config.max_position_embeddings)
    with torch.no_grad():
        base_batch = collate([baseline_dataset(rows, processor, context)[i] for i in range(batch)])
        baseline = float(model(**base_batch, return_loss=True).loss)
        pairs = build_pair_data(rows, processor, max_length=context, progress=False)
        idx = torch.arange(batch)
        ours_batch = pairs.text_batch(idx, torch.device("cpu"))
        ours_batch["pixel_values"] = pairs.pixel_batch(idx, processor.image_processor, torch.device("cpu"))
        image, text, scale = ContrastiveEncoder(model)(**ours_batch)
        ours = float(contrastive_loss(image, text, scale))
    return {"baseline_loss": round(baseline, 6), "ours_loss": round(ours, 6), "abs_diff": abs(baseline - ours),
            "baseline_text_width": int(base_batch["input_ids"].shape[1]), "ours_text_width": int(ours_batch["input_ids"].shape[1])}


def load_train_split(dataset: str, n: int | None):
    from workbench.data import ColumnMap, load_splits

    split = load_splits(dataset, ColumnMap(), splits=["train"])["train"]
    return split.select(range(min(n, len(split)))) if n else split
