"""Fine-tune a CLIP end to end and write one self-describing run folder (see workbench.schema)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from workbench import schema
from workbench.io import atomic_write_json
from workbench.train.config import FinetuneConfig
from workbench.train.strategies import resolve_lora_targets, validate_strategy
from workbench.train.wise import check_alphas

MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "all")


def validate_config(config: FinetuneConfig) -> None:
    """Every check that needs no model or data; raises ``ValueError`` naming the fix."""
    validate_strategy(config.strategy, unfreeze_last_blocks=config.unfreeze_last_blocks)
    if not config.model:
        raise ValueError("--model is required (hub id, folder, run folder, or workbench/demo-clip)")
    if not config.dataset:
        raise ValueError("--dataset is required (hub id, folder, or workbench/demo-derm)")
    if config.mixed_precision not in (None, *MIXED_PRECISION):
        raise ValueError(f"--mixed-precision {config.mixed_precision!r}; choose one of: {', '.join(MIXED_PRECISION)}")
    if config.report_to not in TRACKERS:
        raise ValueError(f"--report-to {config.report_to!r}; choose one of: {', '.join(TRACKERS)}")
    for name in ("per_device_batch_size", "accumulation_steps", "epochs", "lora_r"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.per_device_batch_size < 2:
        raise ValueError("--per-device-batch-size must be at least 2: a contrastive batch needs negatives")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {config.max_steps}")
    for t in config.templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the class name")
    if not config.templates:
        raise ValueError("--templates is empty; give at least one, e.g. 'a photo of {}.'")
    check_alphas(config.wise_alpha)
    if config.resume and not config.output_dir:
        raise ValueError("--resume needs --output-dir naming the run folder to continue")


def default_run_dir(recipe: str, strategy: str, root: str | os.PathLike = "runs") -> Path:
    return Path(root) / f"{recipe}-{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def trackers_for(report_to: str) -> list[str]:
    """Tracker names for Accelerate; ``all`` means tensorboard plus whichever of wandb/mlflow is installed."""
    if report_to == "none":
        return []
    if report_to != "all":
        return [report_to]
    import importlib.util

    return ["tensorboard"] + [m for m in ("wandb", "mlflow") if importlib.util.find_spec(m)]


def library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }


def _cosine_with_warmup(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _model_weight_bytes(model: str) -> int | None:
    """Bytes of the model's safetensors weights when it is a local folder (hub sizes are not known offline)."""
    from workbench.demo.base import demo_model_dir
    from workbench.models import DEMO_MODEL, is_run_folder

    folder = demo_model_dir() if model == DEMO_MODEL else Path(model)
    if is_run_folder(folder):
        folder = folder / schema.RUN_MODEL_DIR
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) or None


def _check_room_for_run(config: FinetuneConfig, run_dir: Path) -> None:
    """Fail before loading anything when the run folder cannot be written or its disk is too small.

    Need: the final model plus ``keep_checkpoints`` checkpoints of weights and two AdamW
    moments (4 x weights each), plus 10%.
    """
    from workbench.io import check_free_space

    weights = _model_weight_bytes(config.model) or 0
    need = int(weights * (1 + max(1, config.keep_checkpoints) * 4) * 1.1)
    check_free_space(run_dir, need, what="this run")


def finetune(config: FinetuneConfig, *, recipe: str) -> Path:
    """Fine-tune ``config.model`` on ``config.dataset``; return the run folder.

    Writes config.json, base_model.json, model/ (merged for LoRA), adapter/ (LoRA),
    train_log.jsonl, zeroshot.json (base, tuned and WiSE-FT accuracies on validation and
    test) and checkpoints/. Call under ``accelerate launch`` or plain ``python``.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import broadcast_object_list, set_seed

    from workbench.data import ColumnMap, class_names_of, load_splits, pixels_for
    from workbench.embed import encode_images
    from workbench.models import DEMO_MODEL, describe_model, load_clip, save_clip
    from workbench.train import loop as L
    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.pairs import build_pair_data
    from workbench.train.strategies import apply_strategy, param_groups

    validate_config(config)
    cpu = config.cpu or not torch.cuda.is_available()
    # PartialState first: all processes must agree on the run folder before anything is written.
    PartialState(cpu=cpu)
    run_dir = [str(Path(config.output_dir) if config.output_dir else default_run_dir(recipe, config.strategy))]
    broadcast_object_list(run_dir)
    run_dir = Path(run_dir[0])
    _check_room_for_run(config, run_dir)
    if config.resume and L.last_checkpoint(run_dir) is None:
        raise ValueError(f"--resume: {run_dir} has no complete checkpoint under {schema.RUN_CHECKPOINTS_DIR}/")
    if not config.resume and L.complete_checkpoints(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --output-dir")
    trackers = trackers_for(config.report_to)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(run_dir),
        step_scheduler_with_optimizer=False,
    )
    is_main = accelerator.is_main_process
    set_seed(config.seed)

    if is_main and config.model != DEMO_MODEL and config.strategy != "lora" and config.learning_rate > 1e-4:
        print(
            f"warning: learning rate {config.learning_rate:g} suits the tiny demo model; fine-tuning a pretrained "
            "CLIP usually wants 1e-5 or lower (--learning-rate)"
        )
    # Model first: a LoRA target that matches nothing fails before data is touched.
    model, processor = load_clip(config.model, revision=config.revision, trust_remote_code=config.trust_remote_code)
    if config.strategy == "lora":
        resolve_lora_targets(model, config.lora_targets)
    columns = ColumnMap(
        image=config.image_column,
        caption=config.caption_column or None,
        label=config.label_column,
        groups=tuple(config.group_columns),
    )
    dataset = config.dataset
    train_split = load_splits(dataset, columns, splits=[config.train_split], revision=None)[config.train_split]
    if config.max_train_samples:
        train_split = train_split.select(range(min(config.max_train_samples, len(train_split))))
    eval_names = [s for s in (config.validation_split, config.test_split) if s]
    eval_splits = load_splits(dataset, columns, splits=eval_names) if eval_names else {}
    # Zero-shot classifies over every class seen in any split, in the source's order.
    class_names = class_names_of(train_split)
    class_names += sorted({c for s in eval_splits.values() for c in s["label"]} - set(class_names))
    context = int(model.config.text_config.max_position_embeddings)
    cache = config.pixel_cache_dir
    # With a cache folder the main process decodes first and the others map its files.
    with accelerator.main_process_first() if cache else contextlib.nullcontext():
        pairs = build_pair_data(
            train_split, processor, max_length=context, caption_template=config.templates[0],
            cache_dir=cache, progress=is_main,
        )
        eval_pixels = {
            s: pixels_for(eval_splits[s], processor.image_processor, cache_dir=cache, progress=is_main, desc=f"decoding {s}")
            for s in eval_names
        }

    world = accelerator.num_processes
    global_batch = config.per_device_batch_size * config.accumulation_steps * world
    steps_per_epoch = len(pairs) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(pairs)} usable pairs, fewer than one global batch of {global_batch} "
            f"({world} processes x {config.per_device_batch_size} x {config.accumulation_steps} accumulation); "
            "lower --per-device-batch-size"
        )
    total_steps = config.max_steps or config.epochs * steps_per_epoch

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            run_dir / schema.RUN_CONFIG_FILE,
            {
                "recipe": recipe,
                "config": dataclasses.asdict(config),
                "trust_remote_code": config.trust_remote_code,
                "versions": library_versions(),
                "processes": world,
                "global_batch": global_batch,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "class_names": class_names,
                "train_pairs": len(pairs),
                "truncated_captions": pairs.truncated_captions,
            },
        )
        atomic_write_json(run_dir / schema.RUN_BASE_FILE, {**describe_model(config.model), "revision": config.revision})

    device = accelerator.device
    model.to(device)
    clip_config = model.config
    base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    zeroshot = {"base": {}, "tuned": {}, "wise": []}
    if is_main:
        zeroshot["base"] = _zero_shot_all(model, processor, eval_splits, eval_pixels, class_names, config)
        print(f"base zero-shot accuracy: {_fmt(zeroshot['base'])}")

    if config.gradient_checkpointing:
        # Non-reentrant: works when the inputs need no grad (frozen embeddings, LoRA).
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_strategy(
        model,
        config.strategy,
        unfreeze_last_blocks=config.unfreeze_last_blocks,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets,
    )
    encoder = ContrastiveEncoder(model)
    # Fused AdamW on CUDA: one kernel for all parameters instead of several per tensor.
    optimizer = torch.optim.AdamW(
        param_groups(encoder, config.weight_decay), lr=config.learning_rate, betas=(0.9, config.adam_beta2), eps=1e-6,
        fused=True if accelerator.device.type == "cuda" else None,
    )
    # Not prepared: Accelerate would step it once per process; total_steps already counts optimizer steps.
    scheduler = _cosine_with_warmup(optimizer, config.warmup_steps, total_steps)
    encoder, optimizer = accelerator.prepare(encoder, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if trackers:
        accelerator.init_trackers(run_dir.name, config=_flat_config(config))

    frozen_image = config.strategy == "frozen-image"

    def set_train_mode() -> None:
        encoder.train()
        if frozen_image:
            accelerator.unwrap_model(encoder).clip.vision_model.eval()

    view = L.EncoderView(encoder, clip_config)
    image_features = val_features = None
    if frozen_image:
        # The image side never changes: embed every image once; epochs never run the vision tower.
        encoder.eval()
        image_features = encode_images(view, pairs.pixels, processor.image_processor, batch_size=config.eval_batch_size, progress=is_main)
        if config.validation_split:
            val_features = encode_images(
                view, eval_pixels[config.validation_split].pixels, processor.image_processor, batch_size=config.eval_batch_size
            )

    evaluate = None
    if config.validation_split:
        val_ds, val_px = eval_splits[config.validation_split], eval_pixels[config.validation_split]

        def evaluate() -> float:
            return _zero_shot(view, processor, val_ds, val_px, class_names, config.templates, config.eval_batch_size, val_features)

    trainer_state = {"step": 0, "best_step": None, "best_val": None}
    log = L.TrainLog(run_dir / schema.RUN_TRAIN_LOG, is_main)
    if config.resume:
        ckpt = L.last_checkpoint(run_dir)
        L.load_checkpoint(accelerator, ckpt)
        trainer_state = L.read_trainer_state(ckpt)
        log.keep_until(trainer_state["step"])
        if is_main:
            print(f"resuming {run_dir} from {ckpt.name} (step {trainer_state['step']} of {total_steps})")
    elif is_main and log.path.exists():
        log.path.unlink()

    settings = L.LoopSettings(
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        per_device_batch_size=config.per_device_batch_size,
        accumulation_steps=config.accumulation_steps,
        seed=config.seed,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        eval_steps=config.eval_steps,
        checkpoint_steps=config.checkpoint_steps,
        keep_checkpoints=config.keep_checkpoints,
    )
    trainer_state = L.train_loop(
        accelerator, encoder, optimizer, scheduler, pairs, processor.image_processor, settings, run_dir,
        trainer_state=trainer_state, image_features=image_features, evaluate=evaluate, set_train_mode=set_train_mode,
    )
    final_step = trainer_state["step"]
    chosen = final_step
    if config.select_best and trainer_state.get("best_step") and trainer_state["best_step"] != final_step:
        chosen = trainer_state["best_step"]
        L.load_checkpoint(accelerator, L.checkpoints_dir(run_dir) / f"step_{chosen:07d}")

    full_state = accelerator.get_state_dict(encoder)
    if is_main:
        tuned = _plain_model(clip_config, full_state, config, run_dir)
        save_clip(tuned, processor, run_dir / schema.RUN_MODEL_DIR)
        tuned.to(device)
        zeroshot["tuned"] = _zero_shot_all(tuned, processor, eval_splits, eval_pixels, class_names, config)
        zeroshot["selected_step"] = chosen
        zeroshot["final_step"] = final_step
        zeroshot["best_val"] = trainer_state.get("best_val")
        if config.wise_alpha:
            zeroshot["wise"] = _wise_sweep(base_state, tuned, processor, eval_splits, eval_pixels, class_names, config)
        atomic_write_json(run_dir / schema.RUN_ZEROSHOT_FILE, zeroshot)
        print(f"tuned zero-shot accuracy (step {chosen}): {_fmt(zeroshot['tuned'])}")
        for row in zeroshot["wise"]:
            accs = {k: v for k, v in row.items() if k not in ("alpha", "gap", "gap_split")}
            gaps = ", ".join(f"{c} gap {g:.1%}" for c, g in row.get("gap", {}).items())
            print(f"WiSE-FT alpha={row['alpha']:.2f}: {_fmt(accs)}" + (f"; {gaps}" if gaps else ""))
    accelerator.wait_for_everyone()
    if trackers:
        accelerator.end_training()
    return run_dir


def _plain_model(clip_config, full_state: dict, config: FinetuneConfig, run_dir: Path):
    """A plain CLIPModel on the CPU holding the trained weights (LoRA: adapter saved, then merged).

    Built from the gathered state dict, so it works the same after DDP and FSDP.
    """
    from transformers import CLIPModel

    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.strategies import apply_strategy

    fresh = CLIPModel(clip_config)
    if config.strategy == "lora":
        fresh = apply_strategy(
            fresh, "lora", lora_r=config.lora_r, lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout, lora_targets=config.lora_targets,
        )
    holder = ContrastiveEncoder(fresh)
    holder.load_state_dict({k: v.to("cpu") for k, v in full_state.items()})
    if config.strategy == "lora":
        from workbench.io import atomic_dir

        with atomic_dir(run_dir / schema.RUN_ADAPTER_DIR) as tmp:
            fresh.save_pretrained(str(tmp))
        fresh = fresh.merge_and_unload()
    return fresh.eval()


def _zero_shot(model, processor, dataset, pixel_set, class_names, templates, batch_size, image_features=None) -> float:
    """Zero-shot accuracy; with ``image_features`` the vision tower is not run (frozen image tower)."""
    from workbench.data import column_values
    from workbench.embed import class_embeddings, zero_shot_accuracy, zero_shot_predict

    if image_features is None:
        return zero_shot_accuracy(model, processor, dataset, class_names, templates, pixels=pixel_set, batch_size=batch_size)
    cls = class_embeddings(model, processor.tokenizer, class_names, templates)
    index = {c: i for i, c in enumerate(class_names)}
    truth = torch.tensor([index[c] for c in column_values(dataset, "label")])
    keep = pixel_set.valid
    return float((zero_shot_predict(image_features, cls)[keep] == truth[keep]).float().mean())


def _zero_shot_all(model, processor, splits, pixels, class_names, config) -> dict[str, float]:
    return {
        name: _zero_shot(model, processor, splits[name], pixels[name], class_names, config.templates, config.eval_batch_size)
        for name in splits
    }


def _wise_sweep(base_state, tuned, processor, splits, pixels, class_names, config) -> list[dict]:
    from workbench.train.wise import wise_model

    base = type(tuned)(tuned.config)
    base.load_state_dict(base_state)
    base.to(next(tuned.parameters()).device)
    from workbench.embed import group_accuracy_gaps, zero_shot_hits

    # Group gaps on the last evaluation split (test when there is one): the trade-off a
    # reviewer weighs is domain accuracy against the gap between groups.
    gap_split = list(splits)[-1] if splits else None
    group_columns = [c for c in config.group_columns if gap_split and c in splits[gap_split].column_names]
    rows = []
    for alpha in check_alphas(config.wise_alpha):
        mixed = wise_model(base, tuned, alpha)
        row = {"alpha": alpha, **_zero_shot_all(mixed, processor, splits, pixels, class_names, config)}
        if group_columns:
            px = pixels[gap_split]
            hits = zero_shot_hits(mixed, processor, splits[gap_split], class_names, config.templates,
                                  pixels=px, batch_size=config.eval_batch_size)
            row["gap"] = group_accuracy_gaps(hits, px.valid, splits[gap_split], group_columns)
            row["gap_split"] = gap_split
        rows.append(row)
        del mixed
    return rows


def _fmt(accs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in accs.items()) or "(no evaluation splits)"


def _flat_config(config: FinetuneConfig) -> dict:
    out = {}
    for k, v in dataclasses.asdict(config).items():
        out[k] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else v)
    return out


def _audit_data_args(config: FinetuneConfig) -> dict:

    return {
        "data": config.dataset,
        "split": config.test_split or config.validation_split or config.train_split,
        "image_column": config.image_column,
        "label_column": config.label_column,
        "group_columns": list(config.group_columns) or None,
    }


def python_command() -> str:
    """How to call this interpreter from the current folder: ``.venv/bin/python`` when the
    user never activated the venv (the README's commands), ``python`` when PATH finds it."""
    import shutil
    import sys

    exe = Path(sys.executable)
    found = shutil.which("python")
    if found and Path(found).resolve() == exe.resolve():
        return "python"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def next_steps(run_dir: str | os.PathLike, audit: str | None, config: FinetuneConfig) -> list[str]:
    """The commands to run after a fine-tune (printed by the recipes), runnable as printed."""
    import shlex

    python = python_command()
    cmds = []
    if audit:
        d = _audit_data_args(config)
        cmd = [python, "-m", "workbench.audit", "--model", str(run_dir), "--audit", audit, "--data", d["data"],
               "--split", d["split"]]
        if d["image_column"] != "image":
            cmd += ["--image-column", d["image_column"]]
        if d["label_column"] != "label":
            cmd += ["--label-column", d["label_column"]]
        if d["group_columns"]:
            cmd += ["--group-columns", *d["group_columns"]]
        cmds.append(shlex.join(cmd))
    cmds.append(shlex.join([python, "-m", "streamlit", "run", "dashboards/app.py"]))
    return cmds


def run_audit_if_available(run_dir: str | os.PathLike, audit: str, config: FinetuneConfig) -> object | None:
    """Audit base and tuned model of the run on the test split."""
    from workbench.audit import run_audit

    d = _audit_data_args(config)
    return run_audit(
        audit, str(run_dir), d["data"], split=d["split"], image_column=d["image_column"],
        label_column=d["label_column"], group_columns=d["group_columns"], trust_remote_code=config.trust_remote_code,
    )


def recipe_main(config_cls: type, argv: Sequence[str] | None, *, recipe: str, default_audit: str = "") -> int:
    """What every recipe's ``main`` does: parse, fine-tune, audit, print the run folder and next commands.

    Bad input and training failures end with a one-line ``error:`` message and exit status 2 / 1.
    """
    import sys

    from accelerate import PartialState

    from workbench.train.loop import LossNotFinite, OutOfMemory

    config = parse_recipe_args(config_cls, argv)
    try:
        run_dir = finetune(config, recipe=recipe)
    except (LossNotFinite, OutOfMemory) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # DataError, ModelLoadError and config problems are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        if config.audit:
            try:
                result = run_audit_if_available(run_dir, config.audit, config)
            except (ValueError, FileNotFoundError) as err:  # the run itself is complete and kept
                print(f"audit not run: {err}", file=sys.stderr)
                result = None
            if result is not None:
                print(f"audit verdict: {result.summary.get('verdict')} (written to {run_dir}/{schema.RUN_AUDIT_DIR}/)")
        print(f"\nrun folder: {run_dir}")
        for cmd in next_steps(run_dir, config.audit or default_audit, config):
            print(f"next: {cmd}")
    return 0


def parse_recipe_args(config_cls: type, argv: Sequence[str] | None):
    """Parse ``argv`` into ``config_cls`` with HfArgumentParser; unknown flags are an error."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls)
    (config,) = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    return config
