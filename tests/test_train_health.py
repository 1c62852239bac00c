"""Fine-tuning that went wrong is said out loud: each detector on hand-made numbers, then the run's report."""

from __future__ import annotations

import json

import pytest

from workbench import schema
from workbench.train import health as H


def test_tuned_below_base_names_each_split_that_got_worse():
    base = {"validation": 0.60, "test": 0.55}
    assert H.tuned_below_base(base, {"validation": 0.60, "test": 0.70}) == []  # equal is not worse
    warnings = H.tuned_below_base(base, {"validation": 0.52, "test": 0.70})
    assert len(warnings) == 1
    assert warnings[0].startswith("fine-tuning lowered zero-shot accuracy on validation: 52.0% tuned vs 60.0% base")


def test_loss_trend_compares_the_first_and_last_quarter_of_logged_losses():
    # 8 values: windows of 2. First mean 5.0, last mean 4.5: decreasing, no warning.
    assert H.loss_not_decreasing([5.5, 4.5, 9.0, 1.0, 7.0, 3.0, 4.0, 5.0]) is None
    # First mean (3+4)/2 = 3.5, last mean (3+4)/2 = 3.5: not decreasing.
    flat = H.loss_not_decreasing([3.0, 4.0, 1.0, 1.0, 1.0, 1.0, 4.0, 3.0])
    assert flat == ("training loss did not decrease: mean of the last 2 logged steps 3.5000 >= mean of the first 2 "
                    "3.5000; check the captions and try another --learning-rate")
    rising = H.loss_not_decreasing([2.0, 2.5, 3.0, 3.5, 4.0])  # window 1: 4.0 >= 2.0
    assert "last 1 logged steps 4.0000 >= mean of the first 1 2.0000" in rising
    assert H.loss_not_decreasing([5.0, 6.0, 7.0]) is None  # too few values to call a trend
    assert H.loss_not_decreasing([5.0, float("nan"), None, 4.0, 3.0, 2.0]) is None  # non-finite values skipped


def test_single_class_is_flagged():
    assert H.single_class(["nevus", "melanoma"]) is None
    assert H.single_class(["nevus"]).startswith("the label column holds a single class ('nevus')")


def test_collapsed_temperature_is_judged_on_the_last_logged_scale():
    assert H.temperature_collapsed([14.3, 9.0, 2.0]) is None  # at the floor is not below it
    warning = H.temperature_collapsed([14.3, 3.0, 1.2])
    assert warning.startswith("the temperature collapsed: logit scale 1.20 at the end (started at 14.30")
    assert H.temperature_collapsed([1.5, 30.0]) is None  # recovered
    assert H.temperature_collapsed([]) is None


def test_run_health_collects_every_warning_with_its_numbers():
    log = [{"step": i, "loss": loss, "logit_scale": scale}
           for i, (loss, scale) in enumerate([(2.0, 14.0), (2.1, 9.0), (2.2, 4.0), (2.3, 1.1)], 1)]
    health = H.run_health(base_accuracy={"test": 1.0}, tuned_accuracy={"test": 0.9}, train_log=log, class_names=["a"])
    assert len(health["warnings"]) == 4
    assert [w.split(" ")[0] for w in health["warnings"]] == ["fine-tuning", "training", "the", "the"]
    assert health["checks"] == {
        "accuracy": {"base": {"test": 1.0}, "tuned": {"test": 0.9}},
        "logged_losses": 4, "final_logit_scale": 1.1, "classes": 1,
    }
    healthy = H.run_health(base_accuracy={"test": 0.3}, tuned_accuracy={"test": 0.6},
                           train_log=[{"loss": 4.0 - i, "logit_scale": 14.0} for i in range(4)], class_names=["a", "b"])
    assert healthy["warnings"] == []


def test_the_run_prints_and_writes_its_warnings(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"step": s, "loss": 3.0, "logit_scale": 14.0}) for s in range(1, 9)]
    (run / schema.RUN_TRAIN_LOG).write_text("\n".join(lines) + "\n{\"step\": 9, \"lo")  # a torn last line is skipped
    returned = H.report_run_health(run, base_accuracy={"validation": 0.5}, tuned_accuracy={"validation": 0.4},
                                   class_names=["a", "b"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    written = json.loads((run / H.RUN_HEALTH_FILE).read_text())
    assert printed == [f"warning: {w}" for w in written["warnings"]]
    assert len(printed) == 2 and "40.0% tuned vs 50.0% base" in printed[0] and "did not decrease" in printed[1]
    assert written["checks"]["logged_losses"] == 8 and returned == written


@pytest.mark.parametrize("text", ["", "not json\n"])
def test_read_train_log_tolerates_missing_and_torn_files(tmp_path, text):
    assert H.read_train_log(tmp_path / "absent.jsonl") == []
    (tmp_path / "log.jsonl").write_text(text)
    assert H.read_train_log(tmp_path / "log.jsonl") == []
