"""Fairness review dashboard: base versus fine-tuned CLIP, from audit results on disk.

    streamlit run dashboards/app.py -- --runs runs/

Reads run folders and audit results (workbench/schema.py); never loads a model except to
show thumbnails in the prompt gallery. Serves only on the loopback address unless told
otherwise with --allow-remote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this folder on sys.path; AppTest and other launchers may not.
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from workbench.report import tables  # noqa: E402
from workbench.report.results import list_runs, resolve_run  # noqa: E402
from views import (compare, detail, disparity, export, gallery, gate, probes, provenance,  # noqa: E402
                   skew, training)
from views import mitigation  # noqa: E402  (issue 13: remedies beside the candidate)
from views import live_probe  # noqa: E402  (issue 14: the live prompt probe)
from views import retrieval  # noqa: E402  (caption retrieval and AUC families)
from views.common import ViewContext, load_run, md  # noqa: E402

VIEWS = {
    "Release gate": gate.render,
    "Base vs fine-tuned": compare.render,
    "Disparity": disparity.render,
    "Association skew": skew.render,
    "Group prompts & labels": probes.render,
    "Prompt gallery": gallery.render,
    "Live prompt probe": live_probe.render,
    "Intersections & classes": detail.render,
    "Retrieval & AUC": retrieval.render,
    "Training": training.render,
    "Mitigation": mitigation.render,
    "Provenance": provenance.render,
    "Export": export.render,
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CREATE_RUN = "bash .dev/setup && .venv/bin/accelerate launch recipes/medical.py"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamlit run dashboards/app.py --")
    parser.add_argument("--runs", default="runs", help="folder holding one folder per run (default: runs/)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="serve even when Streamlit listens on a non-loopback address")
    args, _ = parser.parse_known_args(argv)
    return args


def served_on_loopback() -> bool:
    """True when Streamlit was told to listen on a loopback address only.

    An unset server.address makes Streamlit listen on every interface, so it counts as remote.
    """
    address = st.get_option("server.address")
    return bool(address) and str(address).strip("[]") in LOOPBACK


def empty_state(runs_root: Path) -> None:
    st.title("No runs yet")
    st.markdown(f"There are no run folders in `{md(runs_root)}`. Create one (set-up, fine-tuning on the demo "
                "data, and the audit of base versus fine-tuned) with:")
    st.code(CREATE_RUN, language="bash")
    st.markdown("Then reload this page. To read runs from another folder: "
                "`streamlit run dashboards/app.py -- --runs <folder>`.")


def pick_run(runs_root: Path, names: list[str]) -> str:
    """Run selector; a ?run= link is honoured only when it names a run inside the runs folder."""
    wanted = st.query_params.get("run")
    if wanted is not None and "run" not in st.session_state:
        try:
            name = resolve_run(runs_root, wanted).name
            if name in names:
                st.session_state["run"] = name
        except ValueError as err:
            st.sidebar.error(md(err))
    statuses = {n: load_run(runs_root / n).status for n in names}
    name = st.sidebar.selectbox("run (newest first)", names, key="run",
                                format_func=lambda n: n if statuses[n] == "ok" else f"{n} ⚠")
    st.query_params["run"] = name
    broken = {n: s for n, s in statuses.items() if s != "ok"}
    if broken:
        with st.sidebar.expander(f"Runs with problems ({len(broken)})"):
            for n, reason in broken.items():
                st.markdown(f"**{md(n)}**: {md(reason)}")
    return name


def main() -> None:
    st.set_page_config(page_title="CLIP fairness review", page_icon=":material/balance:", layout="wide")
    args = parse_args(sys.argv[1:])
    if not served_on_loopback() and not args.allow_remote:
        st.error("This dashboard shows unreleased audit results and serves them only on 127.0.0.1. Start it "
                 "from the repository root (its .streamlit/config.toml binds to 127.0.0.1), or pass "
                 "`--server.address 127.0.0.1`; to serve on another address on purpose, add `-- --allow-remote`.")
        st.stop()
    runs_root = Path(args.runs)
    names = list_runs(runs_root)
    if not names:
        empty_state(runs_root)
        return
    name = pick_run(runs_root, names)
    run = load_run(resolve_run(runs_root, name))

    audit = None
    readable = run.readable_audits
    if len(readable) > 1:
        chosen = st.sidebar.selectbox("audit", [a.name for a in readable], key="audit")
        audit = next(a.results for a in readable if a.name == chosen)
    elif readable:
        audit = readable[0].results
    for entry in run.audits:
        if entry.results is None:
            st.sidebar.error(f"Audit **{md(entry.name)}** unreadable: {md(entry.problem)}")

    attribute = k = None
    if audit is not None:
        attrs = tables.attributes(audit.table, audit.attribute_order)
        if attrs:
            attribute = st.sidebar.selectbox("attribute", attrs, key="attribute")
        ks = tables.ranking_ks(audit.table)
        if ks:
            k = st.sidebar.selectbox("k (top-k cut-off)", ks, key="k")
    view = st.sidebar.radio("view", list(VIEWS), key="view")
    st.sidebar.caption(f"Runs folder: {md(runs_root)}")

    ctx = ViewContext(runs_root=runs_root, run=run, audit=audit, attribute=attribute, k=k)
    VIEWS[view](ctx)


main()
