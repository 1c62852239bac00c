"""Balanced fine-tuning: exact per-cell counts each epoch, stated weights, same order on every
process and resume, and runs without --balance-groups keep the plain shuffle bit for bit."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from train_fixtures import derm_dir, tiny_model_dir  # noqa: F401

from workbench import schema
from workbench.train import FinetuneConfig, finetune, validate_config
from workbench.train.balance import BalancePlan, balance_plan, heavy_upweight_note
from workbench.train.loop import epoch_order, local_rows
from workbench.train.pairs import PairData


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _cell_counts(plan: BalancePlan, order: torch.Tensor) -> list[int]:
    return torch.bincount(plan.cell_of_row[order], minlength=len(plan.cells)).tolist()


def test_every_cell_gets_the_same_count_each_epoch():
    # Groups of 7, 3 and 2 pairs: 12 rows, 3 cells, so exactly 4 draws per cell in every epoch.
    plan = balance_plan({"tone": ["dark"] * 7 + ["light"] * 3 + ["mid"] * 2}, ["tone"])
    assert plan.cells == ("dark", "light", "mid") and plan.cell_sizes() == [7, 3, 2]
    for epoch in range(5):
        order = plan.epoch_order(seed=0, epoch=epoch)
        assert order.numel() == 12 and _cell_counts(plan, order) == [4, 4, 4]
        uses = Counter(order.tolist())
        # Within a cell rows repeat as evenly as possible: the 3-row cell uses each row once or twice,
        # the 2-row cell each row exactly twice, the 7-row cell 4 distinct rows once.
        assert sorted(uses[r] for r in range(7, 10)) == [1, 1, 2]
        assert [uses[10], uses[11]] == [2, 2]
        assert sorted(uses[r] for r in range(7) if uses[r]) == [1, 1, 1, 1]


def test_remainder_goes_to_seeded_cells_so_expected_counts_are_equal():
    plan = balance_plan({"tone": ["a"] * 8 + ["b"] * 4 + ["c"]}, ["tone"])  # 13 rows, 3 cells: 4 each + 1
    totals = torch.zeros(3)
    epochs = 600
    for epoch in range(epochs):
        counts = _cell_counts(plan, plan.epoch_order(seed=1, epoch=epoch))
        assert sum(counts) == 13 and sorted(counts) == [4, 4, 5]
        totals += torch.tensor(counts, dtype=torch.float32)
    # The extra draw goes to each cell with probability 1/3: mean 13/3 per cell (binomial sd of the
    # mean of the extra: sqrt(2/9 / 600) = 0.019; 0.08 is over 4 sd).
    assert torch.allclose(totals / epochs, torch.full((3,), 13 / 3), atol=0.08)


def test_group_by_label_cells_and_stated_weights():
    tone = ["dark", "dark", "dark", "light", "light", "light", "light", "light"]
    label = ["mel", "mel", "nev", "nev", "nev", "nev", "nev", "mel"]
    plan = balance_plan({"tone": tone}, ["tone"], labels=label)
    assert plan.by_label and plan.cells == ("dark*mel", "dark*nev", "light*mel", "light*nev")
    assert plan.cell_sizes() == [2, 1, 1, 4]
    # Weight = (N / C) / n_cell = 2 / n_cell.
    assert plan.cell_weights() == [1.0, 2.0, 2.0, 0.5]
    described = plan.describe()
    assert described["columns"] == ["tone"] and described["by_label"] is True
    assert described["cells"]["dark*nev"] == {"size": 1, "weight": 2.0}
    assert _cell_counts(plan, plan.epoch_order(seed=3, epoch=0)) == [2, 2, 2, 2]
    # Two columns: their combinations are the cells.
    two = balance_plan({"tone": tone, "sex": ["f", "m"] * 4}, ["tone", "sex"])
    assert two.cells == ("dark*f", "dark*m", "light*f", "light*m") and two.cell_sizes() == [2, 1, 2, 3]


def test_order_is_a_pure_function_of_seed_and_epoch():
    plan = balance_plan({"tone": ["a"] * 30 + ["b"] * 6}, ["tone"])
    assert torch.equal(plan.epoch_order(seed=4, epoch=2), plan.epoch_order(seed=4, epoch=2))
    assert not torch.equal(plan.epoch_order(seed=4, epoch=2), plan.epoch_order(seed=4, epoch=3))
    assert not torch.equal(plan.epoch_order(seed=4, epoch=2), plan.epoch_order(seed=5, epoch=2))
    # Two processes slice one order: the slices concatenate to the global batch, as in the plain shuffle.
    order = plan.epoch_order(seed=4, epoch=0)
    both = torch.cat([local_rows(order, 1, 6, rank, 2) for rank in range(2)])
    assert torch.equal(both, order[12:24])


def test_plain_shuffle_is_unchanged():
    # Values of the plain shuffle before balancing existed: runs without --balance-groups keep them.
    assert epoch_order(10, 0, 0).tolist() == [4, 1, 7, 5, 3, 9, 0, 8, 6, 2]
    assert epoch_order(10, 3, 2).tolist() == [0, 7, 1, 6, 3, 8, 9, 4, 2, 5]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="--balance-groups site: no such column"):
        balance_plan({"tone": ["a"]}, ["site"])
    config = FinetuneConfig(model="m", dataset="d", label_column="label", balance_by_label=True)
    with pytest.raises(ValueError, match="--balance-by-label balances group x label cells"):
        validate_config(config)
    config = FinetuneConfig(model="m", dataset="d", label_column="label", balance_groups=["tone", "tone"])
    with pytest.raises(ValueError, match="names a column twice"):
        validate_config(config)
    for kw, message in ((dict(balance_method="reweight"), "--balance-method reweight has no effect without --balance-groups"),
                        (dict(balance_groups=["tone"], balance_method="upsample"), "--balance-method upsample: choose reweight or resample")):
        with pytest.raises(ValueError, match=message):
            validate_config(FinetuneConfig(model="m", dataset="d", label_column="label", **kw))
    heavy = balance_plan({"tone": ["a"] * 100 + ["b"]}, ["tone"])
    assert "'b', 1 pairs, weight 50.5" in heavy_upweight_note(heavy)
    assert heavy_upweight_note(heavy, "reweight").startswith("note: balancing weights each pair of 1 small cell(s)")
    assert heavy_upweight_note(balance_plan({"tone": ["a", "b"]}, ["tone"])) is None


def _recorded_rows(monkeypatch) -> list[list[int]]:
    seen: list[list[int]] = []
    original = PairData.text_batch

    def record(self, rows, device):
        seen.append([int(r) for r in rows])
        return original(self, rows, device)

    monkeypatch.setattr(PairData, "text_batch", record)
    return seen


def _config(model_dir, data_dir, out, **kw) -> FinetuneConfig:
    base = dict(
        model=str(model_dir), dataset=str(data_dir), output_dir=str(out), group_columns=["skin_tone", "sex"],
        templates=["a photo of {}."], per_device_batch_size=16, eval_batch_size=64, learning_rate=1e-3,
        warmup_steps=1, logging_steps=1, eval_steps=0, checkpoint_steps=0, max_steps=7, validation_split="",
        test_split="", select_best=False,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def test_runs_draw_the_plain_or_the_balanced_order(tiny_model_dir, derm_dir, tmp_path, monkeypatch):
    import datasets

    seen = _recorded_rows(monkeypatch)
    plain = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "plain"), recipe="test")
    # 96 pairs, batches of 16: 6 steps per epoch, the 7th starts epoch 1.
    expected = [epoch_order(96, 0, 0)[i * 16 : (i + 1) * 16].tolist() for i in range(6)]
    expected.append(epoch_order(96, 0, 1)[:16].tolist())
    assert seen == expected
    assert json.loads((plain / schema.RUN_CONFIG_FILE).read_text())["balance"] is None

    seen.clear()
    run = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "balanced", balance_groups=["skin_tone"],
                           balance_by_label=True, balance_method="resample", group_columns=[]), recipe="test")
    train = datasets.load_from_disk(str(derm_dir))["train"]
    plan = balance_plan({"skin_tone": train["skin_tone"][:]}, ["skin_tone"], labels=train["label"][:])
    order = plan.epoch_order(0, 0)
    assert seen[:6] == [order[i * 16 : (i + 1) * 16].tolist() for i in range(6)]
    stated = json.loads((run / schema.RUN_CONFIG_FILE).read_text())["balance"]
    assert stated["columns"] == ["skin_tone"] and stated["by_label"] is True
    assert {c: v["size"] for c, v in stated["cells"].items()} == dict(zip(plan.cells, plan.cell_sizes()))
    # Over the epoch every skin tone x label cell was drawn N // C or N // C + 1 times.
    counts = _cell_counts(plan, torch.tensor([r for batch in seen[:6] for r in batch]))
    assert max(counts) - min(counts) <= 1 and sum(counts) == 96

    # Reweighting (the default): the plain order, every pair's loss weighted by its cell's weight (stated).
    seen.clear()
    run = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "reweighted", balance_groups=["skin_tone"],
                           balance_by_label=True, group_columns=[]), recipe="test")
    assert seen == expected
    stated = json.loads((run / schema.RUN_CONFIG_FILE).read_text())["balance"]
    assert stated["method"].startswith("plain shuffle; each pair's contrastive loss weighted")
    weights = plan.row_weights()
    assert weights.mean().item() == pytest.approx(1.0) and len(set(weights.tolist())) > 1
    losses = [json.loads(line)["loss"] for line in (run / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    plain_losses = [json.loads(line)["loss"] for line in (plain / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    assert losses[0] != plain_losses[0]  # same batch, weighted loss
