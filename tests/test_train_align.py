"""The distribution-alignment regularizer: zero for one shared distribution, the hand-computed
transport cost when groups differ, the same gradient on 2 processes as on 1 with the
concatenated batch, every strategy, logged as align_loss.

Run as a script (``python tests/test_train_align.py OUT GLOBAL_BATCH``, under
``accelerate launch`` for 2 processes) it takes one step of the aligned loss and saves the
gradients, like tests/train_ddp_script.py does for the plain loss.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from train_fixtures import (  # noqa: E402, F401
    REPO,
    derm_dir,
    grads_of,
    max_diff,
    random_batch,
    run_python,
    tiny_model,
    tiny_model_dir,
)

from workbench import schema  # noqa: E402
from workbench.train import FinetuneConfig, contrastive_loss, finetune, split_micro_batches, validate_config  # noqa: E402
from workbench.train.align import aligned_contrastive_loss, aligned_contrastive_step, alignment_term  # noqa: E402
from workbench.train.encoder import ContrastiveEncoder  # noqa: E402

SCRIPT = str(REPO / "tests" / "test_train_align.py")
LAUNCH_2 = [
    "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_zero_when_groups_share_the_batch_distribution():
    similarity = torch.tensor([0.1, 0.5, 0.9, 0.1, 0.5, 0.9])
    codes = torch.tensor([[0], [0], [0], [1], [1], [1]])
    assert abs(float(alignment_term(similarity, codes))) < 1e-6
    # Two attributes that both split the batch into copies of its distribution: still 0.
    two = torch.tensor([[0, 0], [0, 1], [0, 0], [1, 1], [1, 0], [1, 1]])
    shared = torch.tensor([0.1, 0.5, 0.9, 0.9, 0.5, 0.1])
    assert abs(float(alignment_term(shared, two))) < 1e-6


def test_hand_computed_cost_when_groups_differ():
    # Group 0 at {0.1, 0.2, 0.3}, group 1 at {0.7, 0.8, 0.9}. In one dimension the optimal plan
    # matches quantiles: group 0's quantile function against the batch's over sixths of mass is
    # (0.1-0.1, 0.1-0.2, 0.2-0.3, 0.2-0.7, 0.3-0.8, 0.3-0.9), squared and summed 0.88, so with
    # geomloss's cost |x-y|^2 / 2 the cost is 0.88 / 6 / 2; group 1 mirrors it: total 0.88 / 6.
    similarity = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    codes = torch.tensor([[0], [0], [0], [1], [1], [1]])
    term = float(alignment_term(similarity, codes, blur=0.01))
    assert term == pytest.approx(0.88 / 6, abs=2e-3)
    # A smaller shift costs less; the term is a sum over attributes.
    closer = float(alignment_term(torch.tensor([0.4, 0.5, 0.6, 0.45, 0.55, 0.65]), codes, blur=0.01))
    assert 0 < closer < term
    doubled = float(alignment_term(similarity, torch.cat([codes, codes], dim=1), blur=0.01))
    assert doubled == pytest.approx(2 * term, rel=1e-5)


def test_loss_parts_and_weight():
    torch.manual_seed(0)
    image, text = torch.randn(8, 5), torch.randn(8, 5)
    scale = torch.tensor(2.0)
    codes = torch.tensor([[0], [1]] * 4)
    total, contrastive, alignment = aligned_contrastive_loss(image, text, scale, codes, weight=0.5)
    assert torch.equal(contrastive, contrastive_loss(image, text, scale))
    assert float(alignment) > 0
    assert float(total) == pytest.approx(float(contrastive) + 0.5 * float(alignment), rel=1e-6)


def test_exact_accumulation_carries_the_term():
    """4 micro-batches of 8 give the gradient of one batch of 32, alignment term included."""
    batch = random_batch(32, seed=1)
    codes = torch.tensor([[i % 3, i % 2] for i in range(32)])
    results = {}
    for micro in (32, 8):
        model = tiny_model(seed=0)
        model.train()
        loss, alignment = aligned_contrastive_step(ContrastiveEncoder(model), split_micro_batches(batch, micro), codes,
                                                   weight=2.0)
        results[micro] = float(loss), float(alignment), grads_of(model)
    (loss32, align32, g32), (loss8, align8, g8) = results[32], results[8]
    assert align32 > 0 and abs(align32 - align8) < 1e-5 and abs(loss32 - loss8) < 1e-5
    assert len(g32) == len(list(tiny_model(seed=0).parameters())) and max_diff(g32, g8) < 1e-5
    # Control: the term moves the gradient, so the equality above is not the plain loss's.
    plain = tiny_model(seed=0)
    plain.train()
    aligned_contrastive_step(ContrastiveEncoder(plain), [batch], codes, weight=0.0)
    assert max_diff(g32, grads_of(plain)) > 1e-4


def test_bad_flags_are_named():
    base = dict(model="m", dataset="d", label_column="label")
    cases = [
        (dict(align_weight=0.5), "--align-weight needs --align-attributes"),
        (dict(align_attributes=["skin_tone"]), "--align-attributes has no effect with --align-weight 0"),
        (dict(align_weight=-1.0, align_attributes=["skin_tone"]), "--align-weight must be a number >= 0"),
        (dict(align_weight=0.5, align_attributes=["skin_tone"], align_blur=0.0), "--align-blur must be a positive number"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            validate_config(FinetuneConfig(**base, **kw))


@pytest.mark.parametrize(("strategy", "accumulation"), [("full", 1), ("frozen-image", 1), ("lora", 1), ("full", 2)])
def test_every_strategy_trains_with_the_term_and_logs_it(tiny_model_dir, derm_dir, tmp_path, strategy, accumulation):
    config = FinetuneConfig(
        model=str(tiny_model_dir), dataset=str(derm_dir), output_dir=str(tmp_path / "run"), strategy=strategy,
        lora_r=4, group_columns=[], templates=["a photo of {}."], per_device_batch_size=16 // accumulation,
        accumulation_steps=accumulation, eval_batch_size=64,
        learning_rate=1e-3, warmup_steps=1, logging_steps=1, eval_steps=0, checkpoint_steps=0, max_steps=3,
        validation_split="", test_split="", select_best=False, align_weight=0.5, align_attributes=["skin_tone", "sex"],
    )
    run = finetune(config, recipe="test")
    records = [json.loads(line) for line in (run / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["align_loss"] > 0 and r["align_loss"] == r["align_loss"] for r in records)
    stated = json.loads((run / schema.RUN_CONFIG_FILE).read_text())["align"]
    assert stated["weight"] == 0.5 and stated["attributes"] == ["skin_tone", "sex"]
    assert set(stated["groups"]) == {"skin_tone", "sex"} and len(stated["groups"]["sex"]) >= 2


# ---------------------------------------------------------------------------- 2 processes = 1 process

GROUPS = torch.tensor([[i % 3, (i // 2) % 2] for i in range(16)])  # two attributes, fixed per pair
# Per-pair loss weights (balanced fine-tuning by reweighting): the weighted mean must also be global.
ROW_WEIGHTS = torch.tensor([1.0 + (i % 3) for i in range(16)])


def _one_step(out: str, global_batch: int, weighted: bool = False) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_file

    accelerator = Accelerator(cpu=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    encoder = ContrastiveEncoder(tiny_model(seed=0))
    encoder.train()
    encoder = accelerator.prepare(encoder)
    batch = random_batch(global_batch, seed=1)
    local = global_batch // world
    mine = {k: v[rank * local : (rank + 1) * local] for k, v in batch.items()}
    codes = GROUPS[:global_batch][rank * local : (rank + 1) * local]
    weights = ROW_WEIGHTS[:global_batch][rank * local : (rank + 1) * local] if weighted else None
    loss, alignment = aligned_contrastive_step(encoder, [mine], codes, weight=2.0, backward=accelerator.backward,
                                               row_weights=weights)
    loss = accelerator.reduce(loss, reduction="mean")
    inner = accelerator.unwrap_model(encoder).clip
    if accelerator.is_main_process:
        tensors = {"loss": loss.reshape(1), "align": alignment.reshape(1), "world": torch.tensor([world])}
        tensors.update({f"grad.{n}": p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None})
        save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    accelerator.wait_for_everyone()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    from safetensors.torch import load_file

    def run(args, out):
        result = run_python(args)
        assert result.returncode == 0, result.stderr[-3000:]
        return load_file(str(out))

    one = run([SCRIPT, str(tmp_path / "one.safetensors"), "16"], tmp_path / "one.safetensors")
    two = run([*LAUNCH_2, SCRIPT, str(tmp_path / "two.safetensors"), "16"], tmp_path / "two.safetensors")
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    assert float(one["align"]) > 0 and abs(float(one["align"]) - float(two["align"])) < 1e-6
    assert abs(float(one["loss"]) - float(two["loss"])) < 1e-5
    grads = [k for k in one if k.startswith("grad.")]
    assert len(grads) > 50 and set(grads) == {k for k in two if k.startswith("grad.")}
    for k in grads:
        assert (one[k] - two[k]).abs().max() < 2e-6, k
    # The regularizer moved the gradient: without it (weight 0) the step would differ.
    assert float(one["align"]) * 2.0 > 1e-4


@pytest.mark.slow
def test_two_processes_equal_one_process_with_per_pair_loss_weights(tmp_path):
    # Balanced fine-tuning by reweighting on several processes: the weighted mean is global
    # (weights gathered like the group codes), so 2 processes give 1 process's loss and gradient.
    from safetensors.torch import load_file

    # 1 process in this interpreter (no subprocess start-up), 2 processes under accelerate launch.
    _one_step(str(tmp_path / "one.safetensors"), 16, weighted=True)
    one = load_file(str(tmp_path / "one.safetensors"))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    _one_step(str(tmp_path / "unweighted.safetensors"), 16)
    unweighted = load_file(str(tmp_path / "unweighted.safetensors"))
    result = run_python([*LAUNCH_2, SCRIPT, str(tmp_path / "two.safetensors"), "16", "weighted"])
    assert result.returncode == 0, result.stderr[-3000:]
    two = load_file(str(tmp_path / "two.safetensors"))
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    assert abs(float(one["loss"]) - float(two["loss"])) < 1e-5
    assert abs(float(one["loss"]) - float(unweighted["loss"])) > 1e-3  # the weights changed the loss
    grads = [k for k in one if k.startswith("grad.")]
    assert len(grads) > 50 and set(grads) == {k for k in two if k.startswith("grad.")}
    for k in grads:
        assert (one[k] - two[k]).abs().max() < 2e-6, k


if __name__ == "__main__":
    _one_step(sys.argv[1], int(sys.argv[2]), weighted=len(sys.argv) > 3 and sys.argv[3] == "weighted")
