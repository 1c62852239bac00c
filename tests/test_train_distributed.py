"""Two processes with the gathered loss take the same step as one process on the whole batch."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from train_fixtures import REPO, run_python

SCRIPT = str(REPO / "tests" / "train_ddp_script.py")
LAUNCH_2 = [
    "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
]


def _run(args, out):
    result = run_python(args)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out))


def _compare(single, double, tol=2e-6):
    assert int(single["world"]) == 1 and int(double["world"]) == 2
    assert abs(float(single["loss"]) - float(double["loss"])) < 1e-5
    grads = [k for k in single if k.startswith("grad.")]
    assert len(grads) > 50 and set(grads) == {k for k in double if k.startswith("grad.")}
    for k in single:
        if k.startswith(("grad.", "weight.")):
            assert (single[k] - double[k]).abs().max() < tol, k


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    single = _run([SCRIPT, str(tmp_path / "one.safetensors"), "16", "16"], tmp_path / "one.safetensors")
    double = _run([*LAUNCH_2, SCRIPT, str(tmp_path / "two.safetensors"), "16", "8"], tmp_path / "two.safetensors")
    _compare(single, double)
    # Exact accumulation under DDP too: 2 processes x 2 micro-batches of 4.
    accum = _run([*LAUNCH_2, SCRIPT, str(tmp_path / "acc.safetensors"), "16", "4"], tmp_path / "acc.safetensors")
    _compare(single, accum)
    # The step moved the weights (so equal weights mean equal updates, not no update).
    from train_fixtures import tiny_model

    init = dict(tiny_model(seed=0).named_parameters())
    moved = max(float((single[f"weight.{n}"] - p.detach()).abs().max()) for n, p in init.items())
    assert moved > 1e-3
