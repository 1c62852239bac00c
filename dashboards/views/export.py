"""Export: the self-contained HTML report and the model-card section, as downloads or into the run."""

from __future__ import annotations

import shlex

import streamlit as st

from workbench.io import atomic_write_text
from workbench.report import HTML_FILE, MODEL_CARD_FILE, REPORT_DIR, render_html, render_model_card
from views.common import ViewContext, md, need_audit


def render(ctx: ViewContext) -> None:
    st.header("Export")
    if not need_audit(ctx):
        return
    html_text = render_html(ctx.run, ctx.audit)
    card_text = render_model_card(ctx.run, ctx.audit)
    left, right = st.columns(2)
    left.download_button("Download HTML report", html_text, file_name=f"{ctx.run.name}-{HTML_FILE}",
                         mime="text/html", key="download_html")
    right.download_button("Download model-card section", card_text, file_name=f"{ctx.run.name}-{MODEL_CARD_FILE}",
                          mime="text/markdown", key="download_card")
    out = ctx.run.folder / REPORT_DIR
    if st.button(f"Write both into {md(out)}", key="write_report"):
        try:
            atomic_write_text(out / HTML_FILE, html_text)
            atomic_write_text(out / MODEL_CARD_FILE, card_text)
        except OSError as err:
            st.error(f"Could not write the report: {md(err)}")
        else:
            st.success(f"Wrote {md(out / HTML_FILE)} and {md(out / MODEL_CARD_FILE)}")
    st.caption("The same files from a shell:")
    st.code(f"python -m workbench.report {shlex.quote(str(ctx.run.folder))}", language="bash")
    with st.expander("Model-card section (Markdown)"):
        st.code(card_text, language="markdown")
