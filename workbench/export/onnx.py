"""CLIP's image and text encoders as ONNX, checked against PyTorch before the export counts.

Exporter: ``torch.onnx.export`` (the dynamo exporter, ``onnxscript``), not Hugging Face
Optimum: every ``optimum-onnx`` release (0.1.0 the newest) requires ``transformers<4.58``
and cannot be installed beside the pinned transformers 5.x without replacing it.

What is written into the output folder (atomically: a failed parity check leaves nothing):

- ``image_encoder.onnx``: ``pixel_values`` (batch, 3, H, W) float32, normalised as the
  image processor does, to ``image_embeds`` (batch, D), L2-normalised;
- ``text_encoder.onnx``: ``input_ids`` and ``attention_mask`` (batch, sequence) int64 to
  ``text_embeds`` (batch, D), L2-normalised; batch and sequence length are dynamic;
- each with its weights in ``<name>.onnx.data`` (ONNX external data: no 2 GB limit);
- the processor (tokenizer and image-processor files), loadable with
  ``CLIPProcessor.from_pretrained(folder)``;
- ``export.json``: the source model and its fingerprint, input and output names, the
  logit scale, and every parity check with its number.

Parity (:func:`check_parity`) runs both runtimes on real inputs: the images of a data
split (in batches and one image alone: the batch size is dynamic), the split's distinct
captions and the zero-shot class prompts. It requires the largest absolute difference of
the normalised embeddings to stay below a tolerance (1e-4) and the zero-shot predictions
of every image to be identical.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workbench import schema
from workbench.data import (
    ColumnMap,
    DataError,
    class_names_of,
    column_values,
    load_splits,
    normalize_pixels,
    pad_token_ids,
    pixels_for,
    tokenize_captions,
)
from workbench.embed import DEFAULT_TEMPLATES, class_embeddings, encode_images, encode_texts, text_context_length
from workbench.io import atomic_dir, atomic_write_json
from workbench.models import is_run_folder, load_clip, model_fingerprint
from workbench.prompts import ensemble, fill_templates

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
MANIFEST_FILE = "export.json"
# A run folder's export goes here unless --output says otherwise.
RUN_EXPORT_DIR = "onnx"
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The export cannot be made as asked (bad data flags, unreadable run configuration); one line naming why."""


class ParityError(ExportError):
    """The exported models do not match PyTorch; the message names the first failing check."""


@dataclass(frozen=True)
class ParityCheck:
    """One comparison of the ONNX models with PyTorch."""

    name: str
    passed: bool
    value: float  # the measured number (max abs difference, or count of differing predictions)
    limit: float  # passes when value < limit (differences) or value <= limit (counts)
    detail: str


@dataclass
class ParityReport:
    checks: list[ParityCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def first_failure(self) -> ParityCheck | None:
        return next((c for c in self.checks if not c.passed), None)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


@dataclass
class ParityInputs:
    """Real inputs for the parity check: pixels of a split's images, texts, the zero-shot task."""

    pixels_u8: torch.Tensor  # (N, 3, H, W) uint8, decodable rows only
    captions: list[str]  # distinct captions of those rows (may be empty)
    class_names: list[str]
    templates: list[str]
    source: str  # "<data> split <split>, N images" for the manifest


class _ImageEncoder(torch.nn.Module):
    """Pixels to L2-normalised projected image embeddings (what ``workbench.embed.encode_images`` returns)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)


class _TextEncoder(torch.nn.Module):
    """Token ids to L2-normalised projected text embeddings (what ``workbench.embed.encode_texts`` returns)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(out, dim=-1)


def write_onnx_encoders(model, processor, folder: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> None:
    """Export both encoders of ``model`` (float32, CPU) and save ``processor`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    side = int(model.config.vision_config.image_size)
    # Example inputs of batch 2: a batch of 1 would let the tracer specialise the batch axis.
    pixels = torch.zeros((2, 3, side, side), dtype=torch.float32)
    ids, _ = tokenize_captions(processor.tokenizer, ["a photo", "a photo of a lesion"], text_context_length(model))
    input_ids, mask = pad_token_ids(ids, processor.tokenizer.pad_token_id)
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=2, max=text_context_length(model))
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    with warnings.catch_warnings():
        # The exporter's own deprecation and tracing notices (torch internals) are not ours to act on,
        # and the test suite turns warnings into errors; so is its log line per torchvision operator
        # it skips (CLIP uses none of them).
        warnings.simplefilter("ignore")
        registration_log.setLevel(logging.ERROR)
        try:
            torch.onnx.export(_ImageEncoder(model).eval(), (pixels,), str(folder / IMAGE_FILE), dynamo=True,
                              input_names=["pixel_values"], output_names=["image_embeds"], opset_version=opset,
                              dynamic_shapes={"pixel_values": {0: batch}}, external_data=True, verbose=False)
            torch.onnx.export(_TextEncoder(model).eval(), (input_ids, mask), str(folder / TEXT_FILE), dynamo=True,
                              input_names=["input_ids", "attention_mask"], output_names=["text_embeds"],
                              opset_version=opset, external_data=True, verbose=False,
                              dynamic_shapes={"input_ids": {0: batch, 1: sequence},
                                              "attention_mask": {0: batch, 1: sequence}})
        finally:
            registration_log.setLevel(level)
    processor.save_pretrained(str(folder))


def parity_inputs(
    data: str,
    image_processor,
    *,
    split: str = "test",
    image_column: str = "image",
    caption_column: str | None = "caption",
    label_column: str = "label",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    max_rows: int | None = None,
) -> ParityInputs:
    """Load ``max_rows`` (default all) images of ``data``'s ``split``, their captions and class names."""
    if not templates:
        raise ExportError("no zero-shot templates given; pass --templates with at least one template containing {}")
    columns = ColumnMap(image=image_column, caption=caption_column, label=label_column, groups=())
    try:
        ds = load_splits(data, columns, splits=[split])[split]
    except DataError as err:
        raise ExportError(f"parity data: {err}") from None
    if max_rows is not None:
        if max_rows < 1:
            raise ExportError(f"--parity-rows must be at least 1, got {max_rows}")
        ds = ds.select(range(min(max_rows, len(ds))))
    pix = pixels_for(ds, image_processor, progress=False)
    valid = pix.valid.numpy()
    if not valid.any():
        raise ExportError(f"parity data: no image of {data} split {split!r} could be decoded")
    captions = []
    if caption_column:
        captions = [c for c in dict.fromkeys(np.asarray(column_values(ds, "caption"), dtype=object)[valid]) if c]
    return ParityInputs(pixels_u8=pix.pixels[torch.from_numpy(valid)], captions=list(captions),
                        class_names=list(class_names_of(ds)), templates=list(templates),
                        source=f"{data} split {split!r}, {int(valid.sum())} images")


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed run is reported as a failed parity check instead
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_image_embeddings(session, pixels_u8: torch.Tensor, image_processor, *, batch_size: int = 64) -> np.ndarray:
    """Image embeddings (N, D) from the exported image encoder, preprocessed exactly as for PyTorch."""
    out = []
    for start in range(0, len(pixels_u8), batch_size):
        batch = normalize_pixels(pixels_u8[start:start + batch_size], image_processor).numpy().astype(np.float32)
        out.append(session.run(["image_embeds"], {"pixel_values": batch})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def onnx_text_embeddings(session, tokenizer, texts: Sequence[str], context_length: int, *,
                         batch_size: int = 256) -> np.ndarray:
    """Text embeddings (T, D) from the exported text encoder, tokenised exactly as for PyTorch."""
    ids, _ = tokenize_captions(tokenizer, list(texts), context_length)
    out = []
    for start in range(0, len(ids), batch_size):
        input_ids, mask = pad_token_ids(ids[start:start + batch_size], tokenizer.pad_token_id)
        out.append(session.run(["text_embeds"], {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def check_parity(
    folder: str | os.PathLike,
    model,
    processor,
    inputs: ParityInputs,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 64,
) -> ParityReport:
    """Compare the ONNX encoders in ``folder`` with ``model`` on ``inputs``; never raises for a mismatch.

    A file that onnxruntime cannot load, or that fails on an input, is a failed check too.
    """
    folder = Path(folder)
    report = ParityReport()
    model = model.float().cpu().eval()
    ip, tok = processor.image_processor, processor.tokenizer
    context = text_context_length(model)
    sessions = {}
    for name, file in (("image_encoder_loads", IMAGE_FILE), ("text_encoder_loads", TEXT_FILE)):
        try:
            sessions[name] = _session(folder / file)
        except Exception as err:  # onnxruntime raises its own exception types for a bad file
            report.checks.append(ParityCheck(name, False, float("nan"), 0.0,
                                             f"onnxruntime cannot load {folder / file}: {_first_line(err)}"))
            return report
        report.checks.append(ParityCheck(name, True, 0.0, 0.0, f"{file} loads in onnxruntime"))
    image_session, text_session = sessions["image_encoder_loads"], sessions["text_encoder_loads"]

    torch_image = encode_images(model, inputs.pixels_u8, ip, batch_size=batch_size).numpy()
    prompts_per_class = [fill_templates(inputs.templates, c) for c in inputs.class_names]
    prompts = [p for group in prompts_per_class for p in group]
    texts = list(dict.fromkeys(inputs.captions + prompts))
    torch_text = encode_texts(model, tok, texts).numpy()
    try:
        onnx_image = onnx_image_embeddings(image_session, inputs.pixels_u8, ip, batch_size=batch_size)
        # One image alone: the exported batch axis must be truly dynamic, down to 1.
        onnx_single = onnx_image_embeddings(image_session, inputs.pixels_u8[:1], ip, batch_size=1)
        onnx_text = onnx_text_embeddings(text_session, tok, texts, context)
    except Exception as err:  # a runtime failure on real inputs is a failed export, not a crash
        report.checks.append(ParityCheck("onnx_inference", False, float("nan"), 0.0,
                                         f"onnxruntime failed on the parity inputs: {_first_line(err)}"))
        return report

    n = len(inputs.pixels_u8)
    image_diff = max(_max_abs(onnx_image, torch_image), _max_abs(onnx_single, torch_image[:1]))
    report.checks.append(ParityCheck(
        "image_embeddings", image_diff < tolerance, image_diff, tolerance,
        f"max abs difference of normalised image embeddings {image_diff:.2e} over {n} images "
        f"(batches of {batch_size} and one alone; limit {tolerance:g})"))
    text_diff = _max_abs(onnx_text, torch_text)
    report.checks.append(ParityCheck(
        "text_embeddings", text_diff < tolerance, text_diff, tolerance,
        f"max abs difference of normalised text embeddings {text_diff:.2e} over {len(texts)} texts "
        f"({len(inputs.captions)} captions, {len(prompts)} class prompts; limit {tolerance:g})"))

    if not inputs.class_names:
        report.checks.append(ParityCheck("zero_shot_predictions", False, float("nan"), 0.0,
                                         "the parity data has no class names: zero-shot predictions cannot be compared"))
        return report
    torch_classes = class_embeddings(model, tok, inputs.class_names, inputs.templates).numpy()
    index = {t: i for i, t in enumerate(texts)}
    onnx_classes = np.stack([ensemble(torch.from_numpy(onnx_text[[index[p] for p in group]])).numpy()
                             for group in prompts_per_class])
    torch_pred = np.argmax(torch_image @ torch_classes.T, axis=1)
    onnx_pred = np.argmax(onnx_image @ onnx_classes.T, axis=1)
    differing = int((torch_pred != onnx_pred).sum())
    first = "" if not differing else f"; first at image {int(np.flatnonzero(torch_pred != onnx_pred)[0])}"
    report.checks.append(ParityCheck(
        "zero_shot_predictions", differing == 0, float(differing), 0.0,
        f"{differing} of {n} zero-shot predictions differ over {len(inputs.class_names)} classes{first}"))
    return report


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def default_export_dir(model: str) -> Path | None:
    """``<run>/onnx`` for a run folder; None otherwise (an output folder must be given)."""
    return Path(model) / RUN_EXPORT_DIR if is_run_folder(model) else None


def run_settings(model: str) -> dict[str, Any]:
    """A run folder's data and templates (its ``config.json``), the defaults for its parity check; {} otherwise."""
    if not is_run_folder(model):
        return {}
    config_file = Path(model) / schema.RUN_CONFIG_FILE
    try:
        config = json.loads(config_file.read_text()).get("config", {})
    except (OSError, ValueError) as err:
        raise ExportError(f"{config_file}: cannot read the run's configuration ({_first_line(err)})") from None
    out = {k: config[k] for k in ("dataset", "image_column", "label_column", "templates") if config.get(k)}
    if "caption_column" in config:
        out["caption_column"] = config["caption_column"] or None  # empty: the run built captions from labels
    if config.get("test_split"):
        out["split"] = config["test_split"]
    return out


def export_onnx(
    model: str,
    output: str | os.PathLike,
    *,
    data: str,
    split: str = "test",
    image_column: str = "image",
    caption_column: str | None = "caption",
    label_column: str = "label",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    parity_rows: int | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 64,
) -> tuple[Path, ParityReport]:
    """Export ``model`` (hub id, folder, run folder or demo name) to ``output``, checked for parity.

    The parity inputs are loaded first, so a bad data flag stops before the export runs.
    Raises :class:`ParityError` naming the first failing check (``output`` is then untouched)
    and :class:`ExportError` for bad inputs.
    """
    clip, processor = load_clip(str(model))
    inputs = parity_inputs(data, processor.image_processor, split=split, image_column=image_column,
                           caption_column=caption_column, label_column=label_column, templates=templates,
                           max_rows=parity_rows)
    output = Path(output)
    with atomic_dir(output) as tmp:
        write_onnx_encoders(clip, processor, tmp, opset=opset)
        report = check_parity(tmp, clip, processor, inputs, tolerance=tolerance, batch_size=batch_size)
        failure = report.first_failure()
        if failure is not None:
            # Raising inside atomic_dir discards the temporary folder: nothing half-checked is left behind.
            raise ParityError(f"parity check {failure.name!r} failed: {failure.detail}")
        atomic_write_json(tmp / MANIFEST_FILE, {
            "model": str(model),
            "fingerprint": model_fingerprint(clip),
            "exporter": f"torch.onnx.export (dynamo), torch {torch.__version__}, opset {opset}",
            "files": {"image_encoder": IMAGE_FILE, "text_encoder": TEXT_FILE},
            "inputs": {"image_encoder": ["pixel_values"], "text_encoder": ["input_ids", "attention_mask"]},
            "outputs": {"image_encoder": "image_embeds", "text_encoder": "text_embeds"},
            "embeddings": "L2-normalised; cosine similarity is their dot product",
            "logit_scale": float(clip.logit_scale.detach().exp()),
            "parity_data": inputs.source,
            "parity": report.to_dict(),
        })
    return output, report
