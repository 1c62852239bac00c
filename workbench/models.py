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


# The README's command to turn pickled weights into safetensors (run it where you trust the files).
CONVERT_COMMAND = (
    "python -c \"import sys; from transformers import CLIPModel, CLIPProcessor; "
    "m = CLIPModel.from_pretrained(sys.argv[1]); m.save_pretrained(sys.argv[2]); "
    "CLIPProcessor.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])\" {source} {target}"
)


def convert_command(source: str, target: str = "clip-safetensors") -> str:
    """The conversion command filled in for one model (see :data:`CONVERT_COMMAND`)."""
    return CONVERT_COMMAND.format(source=source, target=target)


def _looks_like_path(name: str) -> bool:
    """A reference a hub id can never be: ./x, /x, ~/x, a/b/c, or a Windows path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


def hub_snapshot_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached file of a hub model (None when not cached), resolved as ``from_pretrained`` resolves it offline."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # a malformed id (HFValidationError) is not a cached model
        return None
    return Path(found) if isinstance(found, str) else None


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub model reference resolves to in the local cache (its snapshot folder name), or None."""
    config = hub_snapshot_file(repo_id, "config.json", revision)
    return config.parent.name if config is not None else None


def check_model_reference(name_or_path: str, revision: str | None = None) -> None:
    """Fail in one line, before anything loads, for a --model that cannot be found or loaded safely.

    A missing folder is named as such (not as a malformed hub id); with ``HF_HUB_OFFLINE`` a hub
    id missing from the cache says so; a cached hub snapshot with only pickled weights is
    refused with the command that converts it.
    """
    if name_or_path == DEMO_MODEL:
        return
    p = Path(name_or_path).expanduser()
    if p.exists():
        resolve_model_path(name_or_path)  # a file, or a folder of pickled weights, is refused here
        if p.is_dir() and not is_run_folder(p) and not (p / "config.json").is_file():
            raise ModelLoadError(f"--model {name_or_path}: the folder has no config.json; pass the folder written by "
                                 "save_pretrained (config.json + model.safetensors) or a run folder")
        return
    if _looks_like_path(name_or_path):
        raise ModelLoadError(
            f"--model {name_or_path}: no such folder; pass an existing save_pretrained folder or run folder, "
            f"a hub id such as openai/clip-vit-base-patch32, or {DEMO_MODEL}"
        )
    config = hub_snapshot_file(name_or_path, "config.json", revision)
    if config is not None:
        snapshot = config.parent
        if not any(snapshot.glob("*.safetensors")) and any((snapshot / n).exists() for n in _PICKLE_WEIGHTS):
            raise ModelLoadError(
                f"--model {name_or_path}: the cached snapshot {snapshot.name[:12]} has only pickled weights "
                f"(pytorch_model.bin), which can run code when loaded; convert them once where you trust the files: "
                f"{convert_command(name_or_path)} and pass --model clip-safetensors"
            )
        return
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"--model {name_or_path}: not a folder here and not in the Hugging Face cache ({constants.HF_HUB_CACHE}), "
            "and HF_HUB_OFFLINE is set; download it once with network access or pass a local folder"
        )


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
        if "use_safetensors" in str(err) or "pytorch_model.bin" in str(err):
            raise ModelLoadError(
                f"cannot load CLIP model {name_or_path!r}: it has only pickled weights (pytorch_model.bin), which can run "
                f"code when loaded; convert them once where you trust the files: {convert_command(name_or_path)} "
                "and pass --model clip-safetensors"
            ) from err
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


def describe_model(name_or_path: str, revision: str | None = None) -> dict:
    """What a run or audit records about a model reference: the reference, the revision asked for,
    and where it resolved to: a run's model folder, the demo's build, or for a hub id the
    snapshot commit in the local cache (``commit``; call after loading, so it is cached)."""
    info: dict = {"model": name_or_path, "revision": revision}
    path = Path(name_or_path)
    if not path.exists() and name_or_path != DEMO_MODEL and not _looks_like_path(name_or_path):
        commit = hub_commit(name_or_path, revision)
        if commit is not None:
            info["commit"] = commit
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
