"""Shared pieces of the benchmark scripts: thread set-up, alternating timing, machine facts, JSON out.

Only the standard library is imported at module level: :func:`configure` must set the
thread counts of OpenMP / OpenBLAS before numpy or torch is first imported.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_common_args(parser, *, quick_help: str) -> None:
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op threads for torch, OpenMP and OpenBLAS (default 1: on a shared, oversubscribed "
             "machine spinning thread pools dominate the timings; 0 keeps each library's default)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each side (median reported)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")


def configure(threads: int) -> None:
    """Offline Hugging Face, no progress bars, and ``threads`` intra-op threads everywhere.

    Call before the first import of numpy or torch.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if threads > 0:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    import warnings

    warnings.filterwarnings("ignore")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def alternate(sides: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1) -> dict[str, list]:
    """Run each side ``warmup`` times untimed, then ``repeats`` timed rounds, alternating.

    The order within a round flips every round (A B, B A, ...), so a slow drift of the
    machine's load falls on both sides alike. Returns side -> list of (seconds, result).
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    out: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(timed(sides[name]))
    return out


def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to 3 places; None when either is missing or NaN, or the denominator is 0."""
    if numerator is None or not denominator or numerator != numerator or denominator != denominator:
        return None
    return round(numerator / denominator, 3)


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def emit(result: dict, output: str | None) -> None:
    text = json.dumps(result, indent=2, default=_plain)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")


def _plain(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:
        pass
    return str(obj)
