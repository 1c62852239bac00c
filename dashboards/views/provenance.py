"""Provenance: which models, data, prompts, k, targets, seeds and bootstrap made these numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report.provenance import provenance_rows
from views.common import ViewContext, md


def render(ctx: ViewContext) -> None:
    st.header("Provenance")
    rows = provenance_rows(ctx.run, ctx.audit)
    st.dataframe(pd.DataFrame(rows, columns=["item", "value"]), hide_index=True, width="stretch")
    st.caption(f"Run folder: {md(ctx.run.folder)}")
    for problem in ctx.run.problems:
        st.warning(md(problem))
    if ctx.run.config:
        with st.expander("config.json"):
            st.json(ctx.run.config)
    if ctx.audit is not None and ctx.audit.summary.get("spec"):
        with st.expander("audit definition as run"):
            st.json(ctx.audit.summary["spec"])
