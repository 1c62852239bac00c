"""Training-step throughput and model FLOPs utilisation of ViT-B/32 and ViT-B/16 CLIP on one GPU.

The models are built from their published configs with random weights (no hub needed), and
trained with the workbench's own pieces: the global-batch contrastive loss, the no-decay
parameter groups and the temperature clamp. bf16 autocast, SDPA attention, fused AdamW, and
optionally ``torch.compile``. FLOPs per step are counted by ``torch.utils.flop_counter`` on the
real step, not estimated from a formula. Prints one JSON object.

    python bench/gpu.py                      # ViT-B/32 and ViT-B/16, batch 256, bf16 (GPU)
    python bench/gpu.py --compile            # also compiled
    python bench/gpu.py --tiny               # CPU smoke run with a tiny config (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
from transformers import CLIPConfig, CLIPModel

from workbench.train.loss import contrastive_loss
from workbench.train.strategies import clamp_logit_scale, param_groups

# Published architecture hyper-parameters of OpenAI CLIP (Radford et al. 2021, table 20).
CONFIGS: dict[str, dict] = {
    "vit-b-32": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
                     text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, vocab_size=49408),
                     projection_dim=512),
    "vit-b-16": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16),
                     text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, vocab_size=49408),
                     projection_dim=512),
    "tiny": dict(vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16),
                 text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77, vocab_size=1000),
                 projection_dim=64),
}

# Dense bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s.
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if all(part in name for part in key.split()):
            return PEAK_BF16[key]
    return None


def build(name: str, device: torch.device) -> CLIPModel:
    spec = CONFIGS[name]
    config = CLIPConfig(
        text_config=dict(spec["text"], eos_token_id=spec["text"]["vocab_size"] - 1, bos_token_id=spec["text"]["vocab_size"] - 2, pad_token_id=spec["text"]["vocab_size"] - 1),
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return CLIPModel(config).to(device)


def make_batch(model: CLIPModel, batch: int, device: torch.device, text_len: int = 77):
    vc, tc = model.config.vision_config, model.config.text_config
    pixels = torch.randn(batch, 3, vc.image_size, vc.image_size, device=device)
    ids = torch.randint(0, tc.vocab_size - 2, (batch, text_len), device=device)
    ids[:, -1] = tc.eos_token_id
    return pixels, ids, torch.ones_like(ids)


def bench_model(name: str, *, batch: int, steps: int, warmup: int, device: torch.device, dtype: torch.dtype, compile_model: bool) -> dict:
    model = build(name, device)
    model.train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=fused)
    pixels, ids, mask = make_batch(model, batch, device)

    def forward_loss():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            img = model.get_image_features(pixel_values=pixels).pooler_output
            txt = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return contrastive_loss(img, txt, model.logit_scale)

    step_fn = torch.compile(forward_loss) if compile_model else forward_loss

    def step():
        loss = step_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp_logit_scale(model)
        return loss

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = forward_loss()
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops_per_step = counter.get_total_flops()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    peak = peak_flops(device)
    achieved = flops_per_step / median
    return {
        "model": name,
        "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "compiled": compile_model,
        "median_step_s": round(median, 5),
        "samples_per_s": round(batch / median, 1),
        "flops_per_step": flops_per_step,
        "achieved_tflops": round(achieved / 1e12, 2),
        "mfu": round(achieved / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "final_loss": round(float(loss.detach()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit-b-32,vit-b-16", help="comma-separated: vit-b-32, vit-b-16, tiny")
    parser.add_argument("--batch", type=int, default=256, help="global batch on the one device")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotune, compile)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    parser.add_argument("--tiny", action="store_true", help="tiny config, batch 8, 3 steps: runs on a CPU")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny or device.type == "cpu":
        models, batch, steps, warmup, dtype = ["tiny"], min(args.batch, 8), min(args.steps, 3), 1, torch.float32
    else:
        models, batch, steps, warmup = args.models.split(","), args.batch, args.steps, args.warmup
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    results = []
    for name in models:
        for compiled in ([False, True] if args.compile else [False]):
            results.append(bench_model(name, batch=batch, steps=steps, warmup=warmup, device=device, dtype=dtype, compile_model=compiled))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "attention": "sdpa",
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
