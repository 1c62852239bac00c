"""onnxruntime (CPU) against PyTorch eager on the exported encoders: same inputs, same batch sizes.

The model is exported with ``workbench.export`` (the same code as ``python -m workbench.export
onnx``), then both runtimes encode the same real inputs: demo test images (preprocessed once,
outside the timing) and demo captions (tokenised and padded once). Each batch size is timed
alternating (eager, onnx, onnx, eager, ...) after a warm-up; medians and the ratio eager / onnx
(above 1: onnxruntime is faster) are reported, with the largest absolute difference of the
normalised embeddings, so both sides are seen to do the same work. Both use ``--threads``
intra-op threads.

    python bench/onnx_speed.py --quick
    python bench/onnx_speed.py                      # the demo model, batches 1, 8, 32, 128
    python bench/onnx_speed.py --model wide         # ViT-B widths (bench/memory.py's wide-clip), 64 px
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import benchlib

DEMO_BATCHES = (1, 8, 32, 128)
QUICK_BATCHES = (1, 32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.add_common_args(p, quick_help="batches 1 and 32, 3 repeats")
    p.add_argument("--model", default="workbench/demo-clip",
                   help="model to export and time; 'wide' = bench/memory.py's ViT-B-width CLIP")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8 32 128)")
    p.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table instead of the JSON")
    return p


def markdown_table(result: dict) -> str:
    """The rows as the BENCHMARKS.md table."""
    lines = ["| tower | batch | PyTorch eager (ms) | onnxruntime (ms) | eager / onnx | onnx items/s | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['tower']} | {r['batch']} | {r['eager_ms']:.2f} | {r['onnx_ms']:.2f} | "
                     f"**{r['eager_over_onnx']:.2f}** | {r['onnx_items_per_s']:.0f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    benchlib.configure(args.threads)
    import numpy as np
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from workbench.data import DEMO_DATASET, normalize_pixels, pad_token_ids, tokenize_captions
    from workbench.embed import text_context_length
    from workbench.export import IMAGE_FILE, TEXT_FILE, parity_inputs, write_onnx_encoders
    from workbench.models import load_clip

    model_ref = args.model
    if model_ref == "wide":
        import memory

        model_ref = memory.wide_model()
    batches = tuple(args.batches or (QUICK_BATCHES if args.quick else DEMO_BATCHES))
    repeats = args.repeats or (3 if args.quick else 7)
    model, processor = load_clip(model_ref)
    model = model.float().eval()
    inputs = parity_inputs(DEMO_DATASET, processor.image_processor, max_rows=max(batches))
    if len(inputs.pixels_u8) < max(batches):
        raise SystemExit(f"the demo test split has {len(inputs.pixels_u8)} images; choose batches up to that")
    pixels = normalize_pixels(inputs.pixels_u8, processor.image_processor).contiguous()
    captions = (inputs.captions * (max(batches) // max(len(inputs.captions), 1) + 1))[:max(batches)]
    ids, _ = tokenize_captions(processor.tokenizer, captions, text_context_length(model))

    options = ort.SessionOptions()
    threads = torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnx-speed-") as tmp:
        folder = Path(tmp)
        export_seconds, _ = benchlib.timed(lambda: write_onnx_encoders(model, processor, folder))
        image_session = ort.InferenceSession(str(folder / IMAGE_FILE), options, providers=["CPUExecutionProvider"])
        text_session = ort.InferenceSession(str(folder / TEXT_FILE), options, providers=["CPUExecutionProvider"])

        for batch in batches:
            x = pixels[:batch]
            x_np = x.numpy()
            input_ids, mask = pad_token_ids(ids[:batch], processor.tokenizer.pad_token_id)
            ids_np, mask_np = input_ids.numpy(), mask.numpy()

            @torch.inference_mode()
            def eager_image():
                return F.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1).numpy()

            def onnx_image():
                return image_session.run(["image_embeds"], {"pixel_values": x_np})[0]

            @torch.inference_mode()
            def eager_text():
                out = model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output
                return F.normalize(out, dim=-1).numpy()

            def onnx_text():
                return text_session.run(["text_embeds"], {"input_ids": ids_np, "attention_mask": mask_np})[0]

            for tower, sides in (("image", {"eager": eager_image, "onnx": onnx_image}),
                                 ("text", {"eager": eager_text, "onnx": onnx_text})):
                timings = benchlib.alternate(sides, repeats=repeats)
                eager_s = benchlib.median([t for t, _ in timings["eager"]])
                onnx_s = benchlib.median([t for t, _ in timings["onnx"]])
                diff = float(np.max(np.abs(timings["eager"][0][1] - timings["onnx"][0][1])))
                rows.append({
                    "tower": tower, "batch": batch,
                    "eager_ms": round(1000 * eager_s, 3), "onnx_ms": round(1000 * onnx_s, 3),
                    "eager_over_onnx": benchlib.ratio(eager_s, onnx_s),
                    "onnx_items_per_s": round(batch / onnx_s, 1), "eager_items_per_s": round(batch / eager_s, 1),
                    "max_abs_diff": diff,
                })

    n_params = sum(p.numel() for p in model.parameters())
    result = {
        "benchmark": "onnx_speed",
        "machine": {**benchlib.machine(), "onnxruntime": ort.__version__, "ort_intra_op_threads": threads},
        "model": str(args.model), "parameters": n_params,
        "image_size": int(model.config.vision_config.image_size),
        "text_tokens_per_batch": "captions padded to the longest in the batch",
        "repeats": repeats, "export_seconds": round(export_seconds, 1),
        "rows": rows,
    }
    if args.markdown:
        print(markdown_table(result))
        if args.output:
            benchlib.emit(result, args.output)
    else:
        benchlib.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
