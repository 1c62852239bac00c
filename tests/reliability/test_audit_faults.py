"""Faults around audit results: a kill while they are written never leaves a mix, and the dashboard never reads half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_AUDIT, run_child

from workbench import schema
from workbench.io import atomic_dir, atomic_write_json, recover_dir
from workbench.report.results import audit_folders, read_audit, read_run


@pytest.fixture(scope="module")
def audited(model_dir, derm_dir, tmp_path_factory) -> Path:
    """The results folder of one complete audit inside runs/r1/audit/."""
    from workbench.audit.runner import run_audit

    root = tmp_path_factory.mktemp("audited")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_AUDIT)
    out = root / "runs" / "r1" / schema.RUN_AUDIT_DIR / "tiny"
    run_audit(spec, str(model_dir), str(derm_dir), output=out, split="test", cache_dir=None, progress=False)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# A child rewrites the audit with every value changed, and dies at the moment the test names.
_REWRITE = """
    import json, os, signal, shutil
    import pandas as pd
    from pathlib import Path
    from workbench.audit.core import AuditResult
    from workbench.audit.runner import write_audit
    folder = Path({folder!r})
    table = pd.read_parquet(folder / "results.parquet")
    table["value"] = table["value"] + 1.0
    summary = json.loads((folder / "summary.json").read_text())
    summary["created"] = "rewritten"
    result = AuditResult(results=table, rankings=pd.read_parquet(folder / "rankings.parquet"), summary=summary)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    {patch}
    write_audit(result, folder)
"""


def _copy_run(audited: Path, tmp_path: Path) -> Path:
    import shutil

    run = tmp_path / "runs" / "r1"
    shutil.copytree(audited.parents[1], run)
    return run / schema.RUN_AUDIT_DIR / "tiny"


@pytest.mark.slow
def test_kill_while_results_are_written_keeps_the_previous_complete_results(audited, tmp_path):
    folder = _copy_run(audited, tmp_path)
    before = _snapshot(folder)
    # Die half-way through the CSV, after the new parquet is already written in the temporary folder.
    patch = ("real = pd.DataFrame.to_csv\n"
             "    def half(self, *a, **kw):\n"
             "        Path(a[0] if a else kw['path_or_buf']).write_text(real(self.head(3), index=False)[:50]); die()\n"
             "    pd.DataFrame.to_csv = half")
    result = run_child(_REWRITE.format(folder=str(folder), patch=patch))
    assert result.returncode == -9, result.stderr[-2000:]
    assert _snapshot(folder) == before
    leftovers = [p.name for p in folder.parent.iterdir() if p.name != "tiny"]
    assert leftovers and all(n.startswith(".") for n in leftovers)  # the half-written folder is hidden
    assert audit_folders(folder.parents[1]) == [folder]
    run = read_run(folder.parents[1])
    assert [a.name for a in run.readable_audits] == ["tiny"] and run.status == "ok"
    assert run.readable_audits[0].results.summary["created"] != "rewritten"


@pytest.mark.slow
def test_kill_just_after_the_swap_shows_the_new_complete_results(audited, tmp_path):
    folder = _copy_run(audited, tmp_path)
    old_values = read_audit(folder).table["value"]
    names = {p.name for p in folder.iterdir()}
    # Die when the old results are about to be deleted, i.e. right after the new folder took their place.
    result = run_child(_REWRITE.format(folder=str(folder), patch="shutil.rmtree = die"))
    assert result.returncode == -9, result.stderr[-2000:]
    new = read_audit(folder)
    assert new.summary["created"] == "rewritten"
    pd.testing.assert_series_equal(new.table["value"], old_values + 1.0)
    assert {p.name for p in folder.iterdir()} == names  # complete: every file of a finished write


def test_folder_left_aside_by_an_interrupted_two_step_swap_is_put_back(tmp_path):
    target = tmp_path / "audit" / "tiny"
    with atomic_dir(target) as tmp:
        (tmp / "summary.json").write_text('{"v": 1}')
    os.replace(target, target.parent / ".tiny.old")  # what a crash between the two renames leaves
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            raise RuntimeError("the audit failed before writing")
    assert json.loads((target / "summary.json").read_text()) == {"v": 1}
    os.replace(target, target.parent / ".tiny.old")
    recover_dir(target)
    assert (target / "summary.json").is_file()


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"verdict": "pass"})
    # RLIMIT_FSIZE makes the kernel refuse the write (EFBIG) exactly as a full disk refuses it (ENOSPC).
    result = run_child(f"""
        import resource, signal
        from workbench.io import atomic_write_json
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        try:
            atomic_write_json({str(target)!r}, {{"verdict": "fail", "padding": "x" * 10_000}})
        except OSError as err:
            print("ERRNO", err.errno, err)
    """)
    assert "ERRNO 27 " in result.stdout and f"cannot write {target}: File too large" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "the previous summary.json is unchanged" in result.stdout
    assert json.loads(target.read_text()) == {"verdict": "pass"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
