"""The tiny base CLIP of the embedded demo: BPE tokenizer, small CLIPModel, contrastive pretraining.

The result is an ordinary ``save_pretrained`` folder (config.json, model.safetensors,
tokenizer and image-processor files), so it loads through exactly the same
``from_pretrained`` path as ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from workbench.demo.derm import CAPTION_TEMPLATES, CLASS_PHRASES, generate_derm_rows
from workbench.demo.shapes import generate_shapes_rows
from workbench.io import atomic_dir, atomic_write_json
from workbench.paths import data_home
from workbench.prompts import fill_template

# Standard CLIP normalisation constants (OpenAI CLIP preprocessing).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class BaseBuildConfig:
    """Every setting of the demo base build; changing any of them changes the built model."""

    recipe_version: int = 2
    seed: int = 0
    vocab_size: int = 1200
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    mlp_size: int = 384
    projection_dim: int = 96
    image_size: int = 64
    patch_size: int = 8
    max_positions: int = 40
    corpus_size: int = 12000
    steps: int = 500
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1


def demo_model_dir() -> Path:
    return data_home() / "demo-clip"


# ---------------------------------------------------------------------------- tokenizer


def train_clip_tokenizer(texts: list[str], vocab_size: int, folder: str | os.PathLike) -> CLIPTokenizer:
    """Train a byte-level BPE with CLIP's normaliser and pre-tokeniser; save vocab.json + merges.txt.

    ``CLIPTokenizer(vocab_file=..., merges_file=...)`` ignores its files in transformers 5, so the
    tokenizer is written to a folder and loaded with ``from_pretrained``, then its size checked.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    spec = json.loads(tok.to_str())
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    # Ids are assigned here, CLIP's way, rather than taken from the trainer, whose ids for
    # equally frequent symbols vary between runs: specials, bytes, bytes at word end, then
    # one token per merge in merge order. Every byte exists both inside a word and at its
    # end, or unseen text would map to the unknown token, which for CLIP is the
    # end-of-text token that pooling reads.
    pieces = [BOS, EOS] + alphabet + [ch + "</w>" for ch in alphabet] + [m.replace(" ", "") for m in merges]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer in {folder} has {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


# ---------------------------------------------------------------------------- model


def make_clip_config(
    tokenizer: CLIPTokenizer,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    mlp_size: int,
    projection_dim: int,
    image_size: int,
    patch_size: int,
    max_positions: int,
) -> CLIPConfig:
    """A small CLIP config whose special-token ids match the tokenizer.

    CLIP's text pooling reads the first end-of-text token; with the default ids (49406/49407)
    it would silently read position 0 on a small vocabulary.
    """
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=mlp_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=hidden_size,
        intermediate_size=mlp_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def make_image_processor(image_size: int):
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


# ---------------------------------------------------------------------------- pretraining


def _normalise(pixels_u8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels_u8.float() / 255.0 - mean) / std


def pretrain_contrastive(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    images_u8: np.ndarray,
    captions: list[str],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Single-process CLIP pretraining of the demo base (the model's own symmetric loss).

    Deterministic for a given seed and thread count, so the build is reproducible.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pixels = torch.from_numpy(images_u8).permute(0, 3, 1, 2).contiguous()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    order = rng.permutation(len(captions))
    cursor = 0
    bar = tqdm(range(steps), desc="pretraining demo base", disable=not progress)
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(captions)), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        tok = tokenizer([captions[i] for i in idx], padding=True, return_tensors="pt")
        out = model(
            input_ids=tok["input_ids"],
            attention_mask=tok["attention_mask"],
            pixel_values=_normalise(pixels[torch.from_numpy(idx)]),
            return_loss=True,
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(out.loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def build_demo_model(folder: str | os.PathLike, config: BaseBuildConfig = BaseBuildConfig(), progress: bool = True) -> Path:
    """Build the tokenizer and the pretrained tiny CLIP into ``folder`` (atomic), with a manifest."""
    torch.use_deterministic_algorithms(True)
    shapes = generate_shapes_rows(config.corpus_size, seed=config.seed + 17)
    derm = generate_derm_rows(2000, seed=config.seed + 29, split="tokenizer")
    # The tokenizer knows both corpora (as a real CLIP's BPE knows medical words it never
    # learned to ground); the model is pretrained on the generic corpus only.
    texts = shapes["caption"] + derm["caption"]
    texts += [fill_template(t, p) for t in CAPTION_TEMPLATES for ps in CLASS_PHRASES.values() for p in ps]
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        tokenizer = train_clip_tokenizer(texts, config.vocab_size, Path(tmp))
        model_config = make_clip_config(
            tokenizer,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            mlp_size=config.mlp_size,
            projection_dim=config.projection_dim,
            image_size=config.image_size,
            patch_size=config.patch_size,
            max_positions=config.max_positions,
        )
        torch.manual_seed(config.seed)
        model = CLIPModel(model_config)
        losses = pretrain_contrastive(
            model,
            tokenizer,
            np.stack(shapes["image"]),
            shapes["caption"],
            steps=config.steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            seed=config.seed,
            progress=progress,
        )
        processor = CLIPProcessor(image_processor=make_image_processor(config.image_size), tokenizer=tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        digest = hashlib.sha256((Path(tmp) / "model.safetensors").read_bytes()).hexdigest()
        atomic_write_json(
            Path(tmp) / "build.json",
            {
                "config": asdict(config),
                "model_sha256": digest,
                "final_loss": losses[-1],
                "first_loss": losses[0],
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        )
    torch.use_deterministic_algorithms(False)
    return folder


def demo_model_is_current(folder: Path, config: BaseBuildConfig = BaseBuildConfig()) -> bool:
    build = folder / "build.json"
    if not (build.exists() and (folder / "model.safetensors").exists()):
        return False
    try:
        return json.loads(build.read_text())["config"] == asdict(config)
    except (ValueError, KeyError):
        return False


def ensure_demo_model(progress: bool = True) -> Path:
    """The demo base folder, built first if missing or built with another recipe.

    Concurrent callers (several accelerate processes) wait on a lock file so it is built once.
    """
    folder = demo_model_dir()
    if demo_model_is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".demo-clip.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not demo_model_is_current(folder):
            build_demo_model(folder, progress=progress)
    return folder


def rebuild_matches(folder: Path | None = None, progress: bool = True) -> tuple[bool, str, str]:
    """Rebuild the demo base in a temp folder and compare the weights' hash with the cached one."""
    folder = folder or demo_model_dir()
    cached = json.loads((folder / "build.json").read_text())["model_sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = build_demo_model(Path(tmp) / "demo-clip", progress=progress)
        fresh = json.loads((rebuilt / "build.json").read_text())["model_sha256"]
    return cached == fresh, cached, fresh
