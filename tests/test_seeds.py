"""Between-run spread over audited run folders (workbench.seeds), on hand-written summaries."""

from __future__ import annotations

import json
import math

import pytest

from workbench import seeds


def _run(tmp_path, name: str, checks: list[dict]):
    folder = tmp_path / name / "audit" / "derm_demo"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"audit": "derm_demo", "checks": checks}))
    return tmp_path / name


def _check(value, low, high, group="dark", verdict="pass", prompt=""):
    return {"name": "accuracy_gap_skin_tone", "metric": "accuracy_gap", "attribute": "skin_tone", "label": "",
            "prompt": prompt, "k": 0, "target": "", "group": "", "worse_group": group, "value": value,
            "ci_low": low, "ci_high": high, "verdict": verdict}


def test_spread_is_hand_computed(tmp_path):
    runs = [
        _run(tmp_path, "s0", [_check(0.10, 0.06, 0.14, verdict="fail")]),
        _run(tmp_path, "s1", [_check(0.04, 0.00, 0.08)]),
        _run(tmp_path, "s2", [_check(0.07, 0.01, 0.13, group="medium")]),
    ]
    table = seeds.seed_spread(runs)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["n_runs"] == 3
    assert row["mean"] == pytest.approx(0.07)
    assert row["between_run_sd"] == pytest.approx(0.03)  # deviations -0.03, 0.03, 0: sqrt(0.0018/2)
    assert (row["min"], row["max"]) == pytest.approx((0.04, 0.10))
    assert row["within_run_half_width"] == pytest.approx((0.04 + 0.04 + 0.06) / 3)
    assert row["spread_ratio"] == pytest.approx(0.03 / ((0.04 + 0.04 + 0.06) / 3))
    assert row["worse_groups"] == ["dark", "dark", "medium"]
    assert row["verdicts"] == ["fail", "pass", "pass"]
    text = seeds.format_spread(table)
    assert "accuracy_gap_skin_tone [skin_tone]" in text and "fail x1, pass x2" in text


def test_checks_matched_by_prompt_and_missing_values_kept_as_none(tmp_path):
    runs = [
        _run(tmp_path, "a", [_check(0.2, 0.1, 0.3, prompt="p1"), _check(0.5, 0.4, 0.6, prompt="p2")]),
        _run(tmp_path, "b", [_check(None, None, None, prompt="p1"), _check(0.7, 0.6, 0.8, prompt="p2")]),
    ]
    table = seeds.seed_spread(runs).set_index("prompt")
    assert table.loc["p2", "mean"] == pytest.approx(0.6)
    assert table.loc["p1", "values"] == [0.2, None]
    assert math.isnan(table.loc["p1", "between_run_sd"])  # one finite value: no spread


def test_cli_writes_files_and_errors_name_the_folder(tmp_path, capsys):
    runs = [_run(tmp_path, f"s{i}", [_check(0.05 * i, 0.0, 0.1)]) for i in range(2)]
    out = tmp_path / "spread"
    assert seeds.main([str(r) for r in runs] + ["--output", str(out)]) == 0
    saved = json.loads((out / seeds.SEEDS_JSON).read_text())
    assert saved["checks"][0]["mean"] == pytest.approx(0.025)
    assert (out / seeds.SEEDS_CSV).read_text().startswith("name,metric,attribute")
    empty = tmp_path / "not-audited"
    empty.mkdir()
    assert seeds.main([str(runs[0]), str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(empty) in err and "audit the run first" in err
    assert seeds.main([str(runs[0])]) == 2
    assert "at least two run folders" in capsys.readouterr().err
