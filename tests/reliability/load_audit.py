"""Load check (not collected by pytest): audit 50,000 demo images with 200 prompts, then open the dashboard.

    .venv/bin/python tests/reliability/load_audit.py --work /tmp/wb-load [--n 50000] [--n-boot 200]

Prints wall time and peak resident memory for each phase, as one JSON line at the end
(numbers for BENCHMARKS.md). Too slow for CI; the reliability suite audits small data sets
through the same run_audit path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# 25 neutral concepts x 8 templates = 200 skew prompts (plus class prompts).
CONCEPTS = [
    "malignant", "benign", "suspicious", "harmless", "dangerous", "cancerous", "worrying", "ordinary",
    "urgent", "routine", "aggressive", "slow-growing", "atypical", "typical", "irregular", "regular",
    "changing", "stable", "bleeding", "itchy", "raised", "flat", "dark", "pale", "large",
]
TEMPLATES = [
    "a photo of a {} lesion", "a {} skin lesion", "dermoscopy of a {} lesion", "a close-up of a {} mole",
    "a clinical image of a {} growth", "a {} spot on the skin", "a picture of a {} lesion", "a {} lesion that was referred",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_data(folder: Path, n: int, chunk: int = 2500) -> Path:
    """n demo images saved chunk by chunk (never all in memory as PIL images)."""
    import datasets

    from workbench.demo.derm import generate_derm

    out = folder / "derm-load"
    if (out / "dataset_dict.json").exists():
        return out
    parts = []
    for i, start in enumerate(range(0, n, chunk)):
        part = folder / f"part-{i:03d}"
        if not (part / "dataset_info.json").exists():
            generate_derm({"test": min(chunk, n - start)}, seed=1000 + i)["test"].save_to_disk(str(part))
        parts.append(datasets.load_from_disk(str(part)))
    datasets.DatasetDict({"test": datasets.concatenate_datasets(parts)}).save_to_disk(str(out))
    return out


def write_spec(folder: Path) -> Path:
    import yaml

    spec = yaml.safe_load((REPO / "audits" / "derm_demo.yaml").read_text())
    spec["name"] = "derm_load"
    spec["skew"] = {"templates": TEMPLATES, "concepts": CONCEPTS, "k": [100, 1000], "targets": ["uniform"]}
    spec["policy"]["checks"] = [c for c in spec["policy"]["checks"] if c["name"] != "accuracy_gap_change_after_tuning"]
    path = folder / "derm_load.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "wb-load"))
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(work / "hf-home"))
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    numbers: dict[str, float] = {"n_images": args.n, "n_boot": args.n_boot}

    t = time.perf_counter()
    data = build_data(work, args.n)
    numbers["data_build_s"] = round(time.perf_counter() - t, 1)
    spec_path = write_spec(work)

    from workbench.audit.runner import run_audit
    from workbench.audit.spec import load_audit_spec
    from workbench.models import DEMO_MODEL

    spec = load_audit_spec(spec_path)
    numbers["skew_prompts"] = len(spec.skew.prompts)
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    out = work / "runs" / "load-50k" / "audit" / "derm_load"
    result = run_audit(spec, DEMO_MODEL, str(data), output=out, split="test", cache_dir=work / "emb-cache",
                       n_boot=args.n_boot, batch_size=args.batch_size, progress=False)
    numbers["audit_s"] = round(time.perf_counter() - t, 1)
    numbers["peak_rss_mb_before_audit"] = round(rss0)
    numbers["peak_rss_mb_after_audit"] = round(peak_rss_mb())
    numbers["result_rows"] = int(len(result.results))

    from streamlit.testing.v1 import AppTest

    t = time.perf_counter()
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    sys.argv = [str(REPO / "dashboards" / "app.py"), "--runs", str(work / "runs")]
    at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=600)
    at.run()
    numbers["dashboard_first_render_s"] = round(time.perf_counter() - t, 1)
    numbers["dashboard_exceptions"] = len(at.exception)
    numbers["peak_rss_mb_end"] = round(peak_rss_mb())
    print(json.dumps(numbers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
