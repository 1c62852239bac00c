"""Live prompt probe: the audit's numbers for the audit's prompts, hand-checkable numbers for new ones,
and the audit-file writer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from live_fixtures import AUDIT_NAME, N_BOOT, SEED, SKEW_PROMPTS, build_live_run, nudge_projections

from workbench import schema
from workbench.audit.runner import run_audit
from workbench.audit.spec import load_audit_spec
from workbench.live import LiveError, add_skew_prompt, open_live_audit, probe_prompt, spec_from_summary
from workbench.live import audit_file as audit_file_module
from workbench.live.audit_file import AuditFileError
from workbench.models import load_clip, save_clip

KEY = ["model", "metric", "attribute", "group", "label", "prompt", "k", "target"]
COMPARED = ["value", "ci_low", "ci_high", "n", "status", "note"]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("live")
    cache = root / "cache"
    run, audit_file = build_live_run(root, tiny_tokenizer, cache)
    return run, audit_file, cache


@pytest.fixture(scope="module")
def live(live_run):
    run, _, cache = live_run
    return open_live_audit(run / schema.RUN_AUDIT_DIR / AUDIT_NAME, cache_dir=cache)


def _audit_rows(folder, prompt: str) -> pd.DataFrame:
    table = pd.read_parquet(folder / schema.RESULTS_FILE)
    return table[table["prompt"] == prompt]


def _assert_same_rows(probe: pd.DataFrame, audit: pd.DataFrame) -> None:
    merged = probe.merge(audit, on=KEY, how="outer", suffixes=("_probe", "_audit"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", KEY]
    for column in COMPARED:
        a, b = merged[f"{column}_probe"], merged[f"{column}_audit"]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), (column, merged.loc[~same, KEY + [f"{column}_probe", f"{column}_audit"]])


def test_probe_equals_the_audit_for_every_prompt_in_the_audit(live, live_run):
    run, _, _ = live_run
    folder = run / schema.RUN_AUDIT_DIR / AUDIT_NAME
    assert set(live.roles) == {"base", "tuned"} and len(live.table) == 120
    for prompt in SKEW_PROMPTS:
        result = probe_prompt(live, prompt)
        assert result.in_audit and (result.n_boot, result.seed) == (N_BOOT, SEED)
        audit = _audit_rows(folder, prompt)
        audit = audit[audit["metric"].isin(result.results["metric"].unique())]
        # Every per-prompt skew metric, for base, tuned and their delta, both k and both targets.
        assert set(result.results["metric"]) == {"skew", "max_skew", "min_skew", "ndkl", "specific_skew",
                                                 "specific_max_skew"}
        assert set(result.results["model"]) == {"base", "tuned", "delta"}
        assert len(result.results) == len(audit) > 100
        _assert_same_rows(result.results, audit)
        rankings = pd.read_parquet(folder / schema.RANKINGS_FILE)
        rankings = rankings[rankings["prompt"] == prompt].reset_index(drop=True)
        pd.testing.assert_frame_equal(result.rankings, rankings, check_dtype=False)


def test_a_new_prompt_gets_skew_computed_by_hand_from_its_ranking(live):
    prompt = "a red spot on the skin"
    result = probe_prompt(live, prompt, n_boot=50, seed=1)
    assert not result.in_audit and result.n_boot == 50
    # The ranking: the images' cosine similarity to the prompt, computed here with numpy.
    text = live.prompt_embedding("tuned", prompt)
    scores = live.models["tuned"].image @ text
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    top = live.table.iloc[order[:20]]
    ranked = result.rankings[result.rankings["model"] == "tuned"]
    assert ranked["row"].tolist() == top["row"].tolist()
    np.testing.assert_allclose(ranked["score"].to_numpy(), scores[order[:20]], rtol=0, atol=1e-6)
    rows = result.results
    for k in (10, 20):
        counts = live.table.iloc[order[:k]]["skin_tone"].value_counts()
        sizes = live.table["skin_tone"].value_counts()
        for group in ("light", "medium", "dark"):
            share = max(counts.get(group, 0), 1) / k  # an absent group counts as 1/k
            for target, expected_share in (("uniform", 1 / 3), ("data", sizes[group] / len(live.table))):
                value = rows[(rows["model"] == "tuned") & (rows["metric"] == "skew") & (rows["attribute"] == "skin_tone")
                             & (rows["group"] == group) & (rows["k"] == k) & (rows["target"] == target)]["value"]
                assert value.item() == pytest.approx(np.log(share / expected_share), abs=1e-12)
        max_skew = rows[(rows["model"] == "tuned") & (rows["metric"] == "max_skew") & (rows["attribute"] == "skin_tone")
                        & (rows["k"] == k) & (rows["target"] == "uniform")]
        shares = [max(counts.get(g, 0), 1) / k for g in ("light", "medium", "dark")]
        assert max_skew["value"].item() == pytest.approx(np.log(max(shares) * 3), abs=1e-12)
        assert max_skew["ci_low"].item() <= max_skew["ci_high"].item()


def test_without_controls_the_probe_skips_specific_skew_and_keeps_every_other_row(live):
    full = probe_prompt(live, SKEW_PROMPTS[0], n_boot=60)
    fast = probe_prompt(live, SKEW_PROMPTS[0], n_boot=60, with_controls=False)
    assert not fast.results["metric"].str.startswith("specific").any()
    kept = full.results[~full.results["metric"].str.startswith("specific")]
    assert full.results["metric"].str.startswith("specific").sum() > 0 and len(fast.results) == len(kept)
    _assert_same_rows(fast.results, kept)


def test_probed_prompt_added_to_the_audit_file_gives_the_probes_numbers_when_audited(live, live_run, tmp_path):
    run, audit_file, cache = live_run
    prompt = "a lesion with an irregular border"
    audit_copy = tmp_path / audit_file.name
    audit_copy.write_text(audit_file.read_text())
    spec, changed = add_skew_prompt(audit_copy, prompt)
    assert changed and spec.skew.prompts[-1] == prompt
    assert load_audit_spec(audit_copy).skew.prompts == (*SKEW_PROMPTS, prompt)
    output = tmp_path / "audit"
    run_audit(audit_copy, run, live.data.info["source"], split="test", cache_dir=cache, output=output, progress=False)
    probed = probe_prompt(live, prompt)
    audit = _audit_rows(output, prompt)
    _assert_same_rows(probed.results, audit[audit["metric"].isin(probed.results["metric"].unique())])


def test_spec_from_summary_reads_what_the_audit_parsed(live_run):
    run, audit_file, _ = live_run
    summary = json.loads((run / schema.RUN_AUDIT_DIR / AUDIT_NAME / schema.SUMMARY_FILE).read_text())
    parsed, rebuilt = load_audit_spec(audit_file), spec_from_summary(summary)
    for field in ("name", "attributes", "intersections", "min_group_size", "skew", "bootstrap"):
        assert getattr(rebuilt, field) == getattr(parsed, field), field
    assert rebuilt.classes is None and rebuilt.policy.checks == ()
    with pytest.raises(LiveError, match="no 'spec'"):
        spec_from_summary({"models": {}})


def test_changed_weights_and_a_missing_cache_are_refused_before_any_embedding(live_run, tmp_path):
    run, _, cache = live_run
    folder = run / schema.RUN_AUDIT_DIR / AUDIT_NAME
    with pytest.raises(LiveError, match=r"no cached image embeddings .*allow_image_encoding=True"):
        open_live_audit(folder, cache_dir=tmp_path / "empty-cache")
    encoded = open_live_audit(folder, cache_dir=tmp_path / "fresh-cache", allow_image_encoding=True)
    cached = open_live_audit(folder, cache_dir=cache)
    for role in ("base", "tuned"):
        np.testing.assert_array_equal(encoded.models[role].image, cached.models[role].image)

    moved = tmp_path / "run"
    import shutil

    shutil.copytree(run, moved)
    model, processor = load_clip(str(moved / schema.RUN_MODEL_DIR))
    nudge_projections(model, seed=9)
    save_clip(model, processor, moved / schema.RUN_MODEL_DIR)
    with pytest.raises(LiveError, match=r"model 'tuned' .*weights changed since the audit"):
        open_live_audit(moved / schema.RUN_AUDIT_DIR / AUDIT_NAME, cache_dir=cache)


def test_probe_refuses_an_empty_prompt(live):
    with pytest.raises(LiveError, match="empty"):
        probe_prompt(live, "   ")


# ---------------------------------------------------------------------------- the audit-file writer


def test_adding_a_prompt_keeps_the_header_validates_and_leaves_a_known_prompt_alone(live_run, tmp_path):
    _, audit_file, _ = live_run
    path = tmp_path / "a.yaml"
    path.write_text(audit_file.read_text())
    spec, changed = add_skew_prompt(path, "  a new prompt ")
    assert changed and spec.skew.prompts == (*SKEW_PROMPTS, "a new prompt")
    text = path.read_text()
    assert text.startswith("# Audit for the live probe tests.\n# Second header line: kept when a prompt is added.\n")
    before = yaml.safe_load(audit_file.read_text())
    after = yaml.safe_load(text)
    assert after["skew"]["prompts"] == [*SKEW_PROMPTS, "a new prompt"]
    after["skew"]["prompts"] = before["skew"]["prompts"]
    assert after == before  # nothing else changed, as data
    again, changed = add_skew_prompt(path, "a benign lesion")
    assert not changed and path.read_text() == text and again == spec


def test_a_file_that_would_not_validate_is_never_written(live_run, tmp_path, monkeypatch):
    _, audit_file, _ = live_run
    path = tmp_path / "a.yaml"
    path.write_text(audit_file.read_text())
    original = path.read_bytes()
    real_parse = audit_file_module.parse_audit_spec
    calls = []

    def parse_then_refuse(data, source):
        calls.append(data)
        if len(calls) == 2:  # the document about to be written
            from workbench.audit.spec import AuditSpecError

            raise AuditSpecError(f"{source}: skew.prompts: planted refusal")
        return real_parse(data, source)

    monkeypatch.setattr(audit_file_module, "parse_audit_spec", parse_then_refuse)
    with pytest.raises(AuditFileError, match="would make the audit invalid, so the file is unchanged: .*planted"):
        add_skew_prompt(path, "another prompt")
    assert path.read_bytes() == original and calls[1]["skew"]["prompts"][-1] == "another prompt"

    monkeypatch.undo()
    broken = tmp_path / "broken.yaml"
    broken.write_text(audit_file.read_text().replace("min_group_size: 5", "min_group_size: many"))
    with pytest.raises(AuditFileError, match="does not validate as it is"):
        add_skew_prompt(broken, "x")
    no_skew = tmp_path / "no_skew.yaml"
    no_skew.write_text("name: n\nattributes:\n  - column: sex\n")
    with pytest.raises(AuditFileError, match="no skew section"):
        add_skew_prompt(no_skew, "x")
    with pytest.raises(AuditFileError, match="not found"):
        add_skew_prompt(tmp_path / "missing.yaml", "x")
