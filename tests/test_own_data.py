"""Bring your own data (issue 12): every listed mistake ends in one line naming the fix, before any
model or image loads, as the user sees it under the real command line; the inferred defaults
(held-out validation split, demo-only defaults, an audit generated from the data) give
hand-computed results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from own_data_fixtures import REPO, last_line, launch, make_csv_of_paths, make_image_folder, run_module
from train_fixtures import tiny_model_dir  # noqa: F401

from workbench.audit.controls import DEFAULT_CONTROL_PROMPTS
from workbench.audit.spec import parse_audit_spec
from workbench.data import ColumnMap, ValidationHoldout, holdout_of, holdout_rows, load_raw, load_splits

# datasets' imagefolder builder leaves metadata.csv open; the ResourceWarning surfaces at a later
# garbage collection in whichever test runs then (users never see it: Python ignores it by default).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("user") / "my_images", n=80)


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory) -> Path:
    return make_csv_of_paths(tmp_path_factory.mktemp("user-csv"), n=80)


def _recipe(model: Path | str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["recipes/medical.py", "--model", str(model), "--data", str(data), "--label-column", "diagnosis",
            "--output-dir", str(out), *extra]


# ---------------------------------------------------------------------------------------------
# one line per mistake, under `accelerate launch --quiet` (the README's command)


def test_missing_model_folder_names_the_folder_not_a_repo_id_rule(user_folder, tmp_path):
    out = tmp_path / "run"
    result = launch(_recipe("./models/my-clip", user_folder, out))
    assert result.returncode == 1  # --quiet: the launcher's own status for a failed script
    assert last_line(result.stderr) == (
        "error: --model ./models/my-clip: no such folder; pass an existing save_pretrained folder or run folder, "
        "a hub id such as openai/clip-vit-base-patch32, or workbench/demo-clip")
    assert "Repo id must be" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_debug_shows_the_traceback(user_folder, tmp_path):
    result = launch(_recipe("./models/my-clip", user_folder, tmp_path / "run", "--debug"))
    assert result.returncode == 1 and "Traceback" in result.stderr and "ModelLoadError" in result.stderr


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_output_path_that_is_a_file(tiny_model_dir, user_folder, tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    result = launch(_recipe(tiny_model_dir, user_folder, out))
    assert last_line(result.stderr) == f"error: --output-dir {out} is a file; name a folder (it is created if missing)"
    assert out.read_text() == "not a folder"


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_empty_saved_data_set(tiny_model_dir, tmp_path):
    import datasets

    empty = tmp_path / "empty"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [], "diagnosis": []})}).save_to_disk(str(empty))
    result = launch(_recipe(tiny_model_dir, empty, tmp_path / "run"))
    assert last_line(result.stderr) == (
        f"error: {empty}: the saved data set has no rows in any split (train); save it again with its rows "
        "(Dataset.save_to_disk)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_negative_learning_rate(tiny_model_dir, user_folder, tmp_path):
    result = launch(_recipe(tiny_model_dir, user_folder, tmp_path / "run", "--learning-rate=-1e-4"))
    assert last_line(result.stderr) == "error: --learning-rate must be a positive number, got -0.0001 (e.g. 1e-5)"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_group_column_missing_from_the_data_is_named(tiny_model_dir, user_folder, tmp_path):
    result = launch(_recipe(tiny_model_dir, user_folder, tmp_path / "run", "--group-columns", "skin_tone", "ethnicity"))
    line = last_line(result.stderr)
    assert line.startswith(f"error: {user_folder}: split 'train' has no column 'ethnicity'; available columns: ")
    assert line.endswith("(set --group-columns)") and "sex" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_audit_attribute_missing_from_the_data_stops_the_recipe(tiny_model_dir, tmp_path):
    data = make_csv_of_paths(tmp_path / "csv", n=40, groups=("skin_tone",))
    result = launch(_recipe(tiny_model_dir, data, tmp_path / "run", "--group-columns", "skin_tone",
                            "--audit", "audits/derm_demo.yaml"))
    line = last_line(result.stderr)
    assert line.startswith("error: audit 'derm_demo' (audits/derm_demo.yaml) has attribute 'sex', which split "), line
    assert "python -m workbench.audit init" in line and not (tmp_path / "run").exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_audit_cli_keeps_every_audit_attribute_and_names_a_missing_group_column(tiny_model_dir, user_csv, tmp_path):
    # --group-columns adds to the audit's attributes: skin_tone and sex are both read, and the
    # unknown 'ethnicity' is named (it was silently swapped for sex, with a false message about sex).
    result = run_module(["-m", "workbench.audit", "--model", str(tiny_model_dir), "--audit", "audits/derm_demo.yaml",
                         "--data", str(user_csv), "--split", "train", "--label-column", "diagnosis",
                         "--group-columns", "skin_tone", "ethnicity", "--output", str(tmp_path / "out")])
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(
        f"error: --group-columns 'ethnicity' is not a column of split 'train' of {user_csv} (columns: image, diagnosis, "
        "skin_tone, sex)")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_audit_cli_k_at_or_above_the_rows_is_an_error_naming_k_and_n(tiny_model_dir, user_csv, tmp_path):
    # derm_demo ranks the top 50 and 100 images; this split has 80 rows.
    result = run_module(["-m", "workbench.audit", "--model", str(tiny_model_dir), "--audit", "audits/derm_demo.yaml",
                         "--data", str(user_csv), "--split", "train", "--label-column", "diagnosis",
                         "--output", str(tmp_path / "out")])
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"error: audit 'derm_demo' (audits/derm_demo.yaml) ranks the top k=100 images, but split 'train' of {user_csv} "
        "has n=80 rows; k must be well below n: set skew.k (and the checks' k) to e.g. [8, 20]")


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_pickle_only_hub_snapshot_is_refused_with_the_readme_conversion_command(user_folder, tmp_path):
    from workbench.models import CONVERT_COMMAND

    home = tmp_path / "hf"
    snapshot = home / "hub" / "models--someone--old-clip" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "pytorch_model.bin").write_bytes(b"not loaded")
    (home / "hub" / "models--someone--old-clip" / "refs").mkdir()
    (home / "hub" / "models--someone--old-clip" / "refs" / "main").write_text("a" * 40)
    result = launch(_recipe("someone/old-clip", user_folder, tmp_path / "run"),
                    env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    line = last_line(result.stderr)
    assert line.startswith("error: --model someone/old-clip: the cached snapshot aaaaaaaaaaaa has only pickled weights")
    assert CONVERT_COMMAND.format(source="someone/old-clip", target="clip-safetensors") in line
    # The README gives the same command (with placeholders for the model and the new folder).
    assert CONVERT_COMMAND.format(source="<hub id or folder>", target="clip-safetensors") in (REPO / "README.md").read_text()


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_hub_id_missing_from_an_offline_cache(user_folder, tmp_path):
    result = launch(_recipe("openai/clip-vit-base-patch32", user_folder, tmp_path / "run"),
                    env={"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": "1"})
    assert last_line(result.stderr).startswith(
        "error: --model openai/clip-vit-base-patch32: not a folder here and not in the Hugging Face cache (")
    assert last_line(result.stderr).endswith("and HF_HUB_OFFLINE is set; download it once with network access or "
                                             "pass a local folder")


# ---------------------------------------------------------------------------------------------
# defaults inferred from the data


def test_stray_json_beside_images_and_metadata_is_still_an_image_folder(user_folder):
    dd, _ = load_raw(str(user_folder))
    assert list(dd) == ["train"] and len(dd["train"]) == 80
    assert set(dd["train"].column_names) == {"image", "diagnosis", "skin_tone", "sex"}


def test_holdout_takes_the_rounded_share_of_every_cell_seeded():
    # cells: a x 10 rows, b x 25 rows, c x 3 rows; 10% of each, half rounded up: 1, 3 (2.5), 0 (0.3)
    strata = [("a",)] * 10 + [("b",)] * 25 + [("c",)] * 3
    held = holdout_rows(strata, 0.1, seed=0)
    assert len(held) == 4
    assert sum(i < 10 for i in held) == 1 and sum(10 <= i < 35 for i in held) == 3 and not any(i >= 35 for i in held)
    assert np.array_equal(held, holdout_rows(strata, 0.1, seed=0))
    assert not np.array_equal(held, holdout_rows(strata, 0.1, seed=1))


def test_carved_validation_split_partitions_train_by_label_and_group(user_folder):
    columns = ColumnMap(label="diagnosis", caption=None, groups=("skin_tone",))
    holdout = ValidationHoldout(fraction=0.25, seed=3, strata=("diagnosis", "skin_tone"))
    dd = load_splits(str(user_folder), columns, splits=["train", "validation"], holdout=holdout)
    train, val = dd["train"], dd["validation"]
    rows_t, rows_v = list(train["row"]), list(val["row"])
    assert sorted(rows_t + rows_v) == list(range(80)) and not set(rows_t) & set(rows_v)
    raw = load_raw(str(user_folder))[0]["train"]
    cells = list(zip(raw["diagnosis"], raw["skin_tone"]))
    for cell in set(cells):
        size = cells.count(cell)
        assert sum(cells[r] == cell for r in rows_v) == int(np.floor(0.25 * size + 0.5)), cell
    # Rows keep their index in the source split: the held-out row's label is the source row's.
    assert [raw["diagnosis"][r] for r in rows_v] == list(val["label"])
    assert holdout_of(val) == {"split": "validation", "carved_from": "train", "fraction": 0.25, "seed": 3,
                               "stratified_by": ["diagnosis", "skin_tone"], "rows": len(val),
                               "rows_left_in_train": len(train)}


def test_empty_group_columns_flag_means_none():
    import importlib.util
    import sys

    from workbench.train import parse_recipe_args

    spec = importlib.util.spec_from_file_location("recipe_medical_own_data", REPO / "recipes" / "medical.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    config = parse_recipe_args(module.MedicalConfig, ["--group-columns", ""])
    assert config.group_columns == [] and config.column_map().groups == ()


def test_demo_defaults_apply_only_to_the_demo_data():
    import importlib.util
    import sys

    from workbench.pipeline import apply_demo_defaults, given_flags
    from workbench.train import parse_recipe_args

    spec = importlib.util.spec_from_file_location("recipe_medical_defaults", REPO / "recipes" / "medical.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = module.MedicalConfig

    def resolved(argv):
        return apply_demo_defaults(parse_recipe_args(cls, argv), cls, given_flags(cls, argv))

    demo = resolved([])
    assert demo.group_columns == ["skin_tone", "sex"] and demo.audit == "audits/derm_demo.yaml"
    assert demo.templates[0] == "a dermoscopy image of {}."
    user = resolved(["--data", "my_images"])
    assert user.group_columns == [] and user.templates == ["a photo of {}."] and user.audit == "auto"
    # On the demo, a flag the user gives wins, even when it equals the generic default.
    assert resolved(["--group-columns", ""]).group_columns == []
    assert resolved(["--group_columns=sex"]).group_columns == ["sex"]


# ---------------------------------------------------------------------------------------------
# python -m workbench.audit init


def test_audit_init_writes_a_valid_audit_sized_to_the_data(user_csv, tmp_path):
    out = tmp_path / "my_audit.yaml"
    result = run_module(["-m", "workbench.audit", "init", "--data", str(user_csv), "--label-column", "diagnosis",
                         "--group-columns", "skin_tone", "sex", "--output", str(out)])
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(out.read_text())
    spec = parse_audit_spec(doc, str(out))
    import pandas as pd

    table = pd.read_csv(user_csv)
    for attribute in spec.attributes:
        counts = table[attribute.column].value_counts()
        assert attribute.reference == sorted(counts.index, key=lambda g: (-counts[g], g))[0]
        assert list(attribute.groups) == sorted(counts.index)
    assert list(spec.classes.labels) == sorted(table["diagnosis"].unique())
    assert spec.skew.k == (8, 20)  # 80 rows: a tenth and a quarter
    assert spec.skew.controls == DEFAULT_CONTROL_PROMPTS
    metrics = {(c.metric, c.attribute) for c in spec.policy.checks}
    for column in ("skin_tone", "sex"):
        assert {("accuracy_gap", column), ("specific_max_skew", column), ("group_dominance", column)} <= metrics
    assert all(c.k == 20 for c in spec.policy.checks if c.k is not None)
    assert not any("dermoscopy" in t or "lesion" in t for t in spec.classes.templates)  # generic, not clinical
    # The file is printed for review, then where it went and the command that uses it.
    assert out.read_text() in result.stdout and f"wrote {out} (from 80 rows of split 'train')" in result.stdout


@pytest.mark.slow  # a real command-line process (~7 s): CI runs it; the fast suite keeps two
def test_audit_init_without_group_columns_says_what_it_needs(user_csv, tmp_path):
    result = run_module(["-m", "workbench.audit", "init", "--data", str(user_csv), "--label-column", "diagnosis",
                         "--output", str(tmp_path / "a.yaml")])
    assert result.returncode == 2
    assert last_line(result.stderr) == ("error: an audit compares groups: name the group columns of the data with "
                                        "--group-columns (e.g. --group-columns skin_tone sex)")


def test_resolved_hub_commit_is_recorded(tmp_path, monkeypatch):
    from workbench.models import describe_model

    repo = tmp_path / "hub" / "models--openai--clip-vit-base-patch32"
    commit = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.file_download.constants.HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    info = describe_model("openai/clip-vit-base-patch32")
    assert info == {"model": "openai/clip-vit-base-patch32", "revision": None, "commit": commit}


# ---------------------------------------------------------------------------------------------
# failed runs leave nothing half-made; a one-class label column is loud


def _failing_finetune(write_checkpoint: bool):
    def finetune(config, recipe):
        run = Path(config.output_dir)
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text("{}")
        if write_checkpoint:
            (run / "checkpoints" / "step_0000003").mkdir(parents=True)
            (run / "checkpoints" / "step_0000003" / "trainer_state.json").write_text("{}")
        raise ValueError("the loss became NaN at step 4")

    return finetune


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_failed_run_is_removed_or_marked_failed(user_folder, tiny_model_dir, tmp_path, capsys, monkeypatch, checkpoint):
    from accelerate.state import AcceleratorState

    from workbench import pipeline

    monkeypatch.setattr(pipeline, "finetune", _failing_finetune(checkpoint))
    monkeypatch.setattr(pipeline, "use_cpu_threads", lambda requested: None)
    out = tmp_path / "run"
    config_cls = _medical_config()
    try:
        code = pipeline.recipe_main(config_cls, ["--model", str(tiny_model_dir), "--data", str(user_folder),
                                                 "--label-column", "diagnosis", "--output-dir", str(out)], recipe="medical")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: the loss became NaN at step 4"
    if checkpoint:  # resumable: kept, and marked for the dashboard
        assert json.loads((out / pipeline.RUN_FAILED_FILE).read_text()) == {
            "error": "the loss became NaN at step 4", "exit_status": 2}
    else:
        assert not out.exists()


def _medical_config():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("recipe_medical_failing", REPO / "recipes" / "medical.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MedicalConfig


@pytest.mark.slow
def test_one_class_label_column_warns_before_training(tiny_model_dir, tmp_path):
    data = make_csv_of_paths(tmp_path / "one", n=40)
    import pandas as pd

    table = pd.read_csv(data)
    table["diagnosis"] = "nevus"
    table.to_csv(data, index=False)
    result = launch(_recipe(tiny_model_dir, data, tmp_path / "run", "--max-steps", "1", "--per-device-batch-size", "8",
                            "--validation-split", "", "--test-split", "", "--audit", ""))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("warning: column 'diagnosis' holds one class ('nevus') in split 'train': zero-shot accuracy over one class is "
            "100% whatever the model does; use data with two or more classes (or the right --label-column)") in result.stdout


def test_resolved_hub_dataset_commit_is_read_from_the_cache(tmp_path, monkeypatch):
    from workbench.data import hub_dataset_commit

    refs = tmp_path / "hub" / "datasets--someone--faces" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("b" * 40 + "\n")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_dataset_commit("someone/faces") == "b" * 40
    assert hub_dataset_commit("someone/faces", "c" * 40) == "c" * 40  # a commit asked for is the commit
    assert hub_dataset_commit("someone/other") is None and hub_dataset_commit(str(tmp_path)) is None


def test_printed_audit_command_carves_the_same_validation_rows_as_training(user_folder):
    from workbench.audit.__main__ import audited_data
    from workbench.data import DataArguments
    from workbench.train import FinetuneConfig

    config = FinetuneConfig(model="m", dataset=str(user_folder), label_column="diagnosis",
                            group_columns=["skin_tone", "sex"], seed=7, validation_fraction=0.2)
    trained_on = load_splits(str(user_folder), ColumnMap(label="diagnosis", caption=None, groups=("skin_tone", "sex")),
                             splits=["validation"], holdout=config.validation_holdout())["validation"]
    spec = parse_audit_spec({"name": "t", "attributes": [{"column": "skin_tone"}, {"column": "sex"}]}, "t.yaml")
    data = DataArguments(dataset=str(user_folder), label_column="diagnosis", group_columns=["skin_tone", "sex"])
    audited, _, n = audited_data(data, "validation", 0.2, 7, spec)
    assert n == len(trained_on) and list(audited["row"]) == list(trained_on["row"])
    assert list(audited["label"]) == list(trained_on["label"])


def test_without_group_columns_training_runs_and_the_audit_names_what_it_needs(user_folder, tiny_model_dir):
    from workbench.pipeline import preflight
    from workbench.train import FinetuneConfig

    config = FinetuneConfig(model=str(tiny_model_dir), dataset=str(user_folder), label_column="diagnosis", audit="auto")
    resolved, found = preflight(config, {"model", "dataset", "label_column", "audit"})
    assert resolved.audit == "" and resolved.caption_column is None and resolved.test_split == ""
    assert found.audit_skipped == ("an audit compares groups and --group-columns names none; rerun with the data's "
                                   "attribute columns (--group-columns <column> ...; columns: image, diagnosis, "
                                   "skin_tone, sex)")
    assert found.held_out and found.notes[0].startswith("no 'caption' column")


def test_every_audit_flag_has_help_text():
    from workbench.audit.__main__ import build_parser
    from workbench.audit.init import build_parser as build_init_parser

    for parser in (build_parser(), build_init_parser()):
        missing = [a.option_strings[0] for a in parser._actions if a.option_strings and not (a.help or "").strip()]
        assert missing == []


@pytest.mark.slow
def test_mitigating_an_own_data_run_reads_its_generated_audit_and_its_carved_split(tiny_model_dir, tmp_path):
    """The README's own-data flow, then ``python -m workbench.mitigate``: the run's audit was generated into the
    run folder (config "audit": "auto") and its validation split carved from train; mitigation must use both."""
    import pandas as pd

    folder = make_image_folder(tmp_path / "my_images", n=200, seed=5)
    run = tmp_path / "mine" / "run"
    done = launch(_recipe(tiny_model_dir, folder, run, "--group-columns", "skin_tone", "sex", "--epochs", "1"))
    assert done.returncode == 0, done.stderr[-2000:]
    holdout = json.loads((run / "config.json").read_text())["validation_holdout"]
    assert holdout["split"] == "validation" and holdout["rows"] > 0
    done = run_module(["-m", "workbench.mitigate", str(run), "--remedy", "project"])
    assert done.returncode == 0, last_line(done.stderr)
    # the printed dashboard command finds the run outside runs/
    assert last_line(done.stdout).endswith(f"dashboards/app.py -- --runs {run.parent}   (view: Mitigation)")
    name = parse_audit_spec(yaml.safe_load((run / "audit.yaml").read_text()), "audit.yaml").name
    candidate = pd.read_parquet(run / "audit" / name / "predictions.parquet")
    joint = pd.read_parquet(run / "variants" / "audit" / name / "predictions.parquet")
    # the same held-out rows as the candidate's own audit, for the base, the candidate and the variant
    assert set(joint["model"]) == {"base", "tuned", "project"}
    audited_rows = sorted(candidate[candidate.model == "tuned"]["row"])
    for model in ("base", "tuned", "project"):
        assert sorted(joint[joint.model == model]["row"]) == audited_rows, model
    assert joint[joint.model == "tuned"]["row"].nunique() == holdout["rows"]
    # and a run whose generated audit is gone says so in one line
    (run / "audit.yaml").unlink()
    done = run_module(["-m", "workbench.mitigate", str(run), "--remedy", "project"])
    assert done.returncode == 2 and last_line(done.stderr) == (
        f"error: {run / 'audit.yaml'}: missing (the run's audit was generated from its data); pass --audit <file>, "
        "e.g. one written by python -m workbench.audit init")
