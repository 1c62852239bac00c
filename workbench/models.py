"""Loading and saving CLIP models and processors: hub ids, folders, run folders, the demo base."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

from workbench import schema
from workbench.demo.base import demo_model_dir, ensure_demo_model, make_clip_config, make_image_processor
from workbench.io import atomic_dir
from workbench.paths import data_home  # noqa: F401  (re-exported: older callers import it from here)

DEMO_MODEL = "workbench/demo-clip"
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "model.pt", "model.pth")


class ModelLoadError(ValueError):
    """A model reference that cannot be loaded safely; the message says how to fix it."""


def is_run_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / schema.RUN_MODEL_DIR).is_dir() and (p / schema.RUN_CONFIG_FILE).is_file()


def resolve_model_path(name_or_path: str) -> str:
    """Map the demo name and run folders to a loadable folder; hub ids and folders pass through."""
    if name_or_path == DEMO_MODEL:
        return str(ensure_demo_model())
    if is_run_folder(name_or_path):
        return str(Path(name_or_path) / schema.RUN_MODEL_DIR)
    p = Path(name_or_path)
    if p.is_dir():
        _refuse_pickle_only(p)
    elif p.exists():
        raise ModelLoadError(f"{p} is a file; pass the folder written by save_pretrained (config.json + model.safetensors)")
    return name_or_path


def _refuse_pickle_only(folder: Path) -> None:
    has_safetensors = any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists()
    pickled = [n for n in _PICKLE_WEIGHTS if (folder / n).exists()]
    if pickled and not has_safetensors:
        raise ModelLoadError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}), which can run code when loaded; "
            "convert them to safetensors in a trusted environment (model.save_pretrained(..., safe_serialization=True))"
        )


PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth", ".ckpt")


def refuse_unsafe_pickles(folder: str | os.PathLike) -> list[Path]:
    """Check every pickle-format file in ``folder`` (e.g. a checkpoint) with ``weights_only=True``.

    Raises :class:`ModelLoadError` naming the first file whose pickle would import or call
    anything beyond tensors, plain containers and numpy arrays (the RNG states Accelerate
    writes); nothing from it is executed. Storages are memory-mapped, so the check reads
    little of large files. Returns the files checked. Call it before
    ``accelerator.load_state``, which unpickles registered objects without this restriction.
    """
    from accelerate.utils.other import TORCH_SAFE_GLOBALS  # accelerate loads only when a checkpoint is checked

    folder = Path(folder)
    checked = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES):
        try:
            with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
                try:
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as err:
                    if "mmap" not in str(err):
                        raise
                    torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
        except Exception as err:  # UnpicklingError, or anything a corrupt file raises
            raise ModelLoadError(
                f"{path} is not a plain tensor file ({_unpickle_reason(err)}); refusing to unpickle it because a pickle can "
                "run code. Resume only from checkpoints this workbench wrote, or delete the file"
            ) from None
        checked.append(path)
    return checked


def _unpickle_reason(err: Exception) -> str:
    """torch's specific line ("unsupported GLOBAL posix.system"), not its advice to turn the check off."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "global" in low or "operand" in low or "unsupported" in low:
            return ln.replace("WeightsUnpickler error:", "").strip()[:200]
    if len(lines) > 1:
        return lines[-2][:200] if "documentation" in lines[-1] else lines[-1][:200]
    return lines[0][:200] if lines else type(err).__name__


def load_image_processor(path: str, *, revision: str | None = None):
    """CLIP image processor; the PIL implementation when torchvision is absent (same numbers)."""
    try:
        import torchvision  # noqa: F401

        from transformers import CLIPImageProcessor as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    return ImageProcessor.from_pretrained(path, revision=revision)


def load_processor(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> CLIPProcessor:
    path = resolve_model_path(name_or_path)
    tokenizer = CLIPTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    return CLIPProcessor(image_processor=load_image_processor(path, revision=revision), tokenizer=tokenizer)


def load_clip(
    name_or_path: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[CLIPModel, CLIPProcessor]:
    """Load a CLIP model and its processor from a hub id, a folder, a run folder or DEMO_MODEL.

    Weights load from safetensors only; a folder holding only pickled weights is refused.
    """
    path = resolve_model_path(name_or_path)
    try:
        model = CLIPModel.from_pretrained(
            path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            dtype=dtype,
        )
    except OSError as err:
        raise ModelLoadError(
            f"cannot load CLIP model {name_or_path!r}: {str(err).splitlines()[0]} "
            "(pass a hub id such as openai/clip-vit-base-patch32, a save_pretrained folder with model.safetensors, "
            f"a run folder, or {DEMO_MODEL})"
        ) from err
    processor = load_processor(path, revision=revision, trust_remote_code=trust_remote_code)
    model.eval()
    return model, processor


def save_clip(model: CLIPModel, processor: CLIPProcessor, folder: str | os.PathLike) -> Path:
    """save_pretrained model (safetensors) and processor into ``folder``, atomically."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return folder


def model_fingerprint(model: torch.nn.Module) -> str:
    """Content hash of the weights: two models with equal tensors get the same fingerprint."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def describe_model(name_or_path: str) -> dict:
    """What a run or audit records about a model reference (id, resolved folder, revision if any)."""
    info = {"model": name_or_path}
    path = Path(name_or_path)
    if is_run_folder(path):
        info["resolved"] = str(path / schema.RUN_MODEL_DIR)
    elif name_or_path == DEMO_MODEL:
        build = demo_model_dir() / "build.json"
        if build.exists():
            info["build"] = json.loads(build.read_text())
    return info


def make_tiny_clip(
    tokenizer: CLIPTokenizer,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    max_positions: int = 40,
    seed: int = 0,
) -> tuple[CLIPModel, CLIPProcessor]:
    """A randomly initialised small CLIP + processor (tests and benchmarks).

    Built from the demo base's config and processor factories, so its special-token ids
    match ``tokenizer`` and its images are normalised with CLIP's constants.
    """
    config = make_clip_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_size=hidden_size * 4,
        projection_dim=hidden_size,
        image_size=image_size,
        patch_size=patch_size,
        max_positions=max_positions,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=make_image_processor(image_size), tokenizer=tokenizer)
    return model, processor
