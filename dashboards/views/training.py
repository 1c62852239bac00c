"""Training: loss, temperature and validation accuracy curves; the WiSE-FT alpha sweep."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench import schema
from workbench.report.text import format_value
from views import charts
from views.common import ViewContext, md

THIRD_TITLE_CHARS = 16  # a chart in a third of a 1000 px window is 170 px wide: 16 characters a title line


def wise_frame(zeroshot: dict) -> pd.DataFrame:
    """zeroshot.json's "wise" list as a table: alpha plus one column per split (and gap keys)."""
    rows = [w for w in zeroshot.get("wise") or [] if isinstance(w, dict) and "alpha" in w]
    # A nested entry such as {"gap": {"skin_tone": 0.1}} becomes a column "gap_skin_tone".
    return pd.json_normalize(rows, sep="_") if rows else pd.DataFrame()


def render(ctx: ViewContext) -> None:
    st.header("Training")
    log = ctx.run.train_log
    if log is None or log.empty or "step" not in log.columns:
        st.info(f"Run **{md(ctx.run.name)}** has no {schema.RUN_TRAIN_LOG}: it was not trained by a recipe "
                "(an audit of an existing model), or training has not logged a step yet.")
    else:
        log = log.sort_values("step")
        cols = st.columns(3)
        if "loss" in log.columns:
            cols[0].altair_chart(charts.line_over_steps(log, "loss", "contrastive loss", title_chars=THIRD_TITLE_CHARS),
                                 width="stretch")
        if "logit_scale" in log.columns:
            # The recipes log the logit scale exp(t) (1 to 100); CLIP's temperature is its inverse.
            scale = pd.to_numeric(log["logit_scale"], errors="coerce")
            log = log.assign(temperature=1.0 / scale.where(scale > 0))
            cols[1].altair_chart(charts.line_over_steps(log, "temperature", "temperature (1 / logit scale)",
                                                        ".4f", title_chars=THIRD_TITLE_CHARS), width="stretch")
        if "val_accuracy" in log.columns and log["val_accuracy"].notna().any():
            cols[2].altair_chart(charts.line_over_steps(log, "val_accuracy", "validation zero-shot accuracy",
                                                        ".1%", title_chars=THIRD_TITLE_CHARS), width="stretch")
        last = log.iloc[-1]
        st.caption(f"{len(log)} logged steps, last step {int(last['step'])}"
                   + (f", loss {format_value(last.get('loss'))}" if "loss" in log.columns else ""))
    zeroshot = ctx.run.zeroshot
    if not zeroshot:
        st.info(f"No {schema.RUN_ZEROSHOT_FILE} in this run.")
        return
    st.subheader("Zero-shot accuracy per split")
    rows = []
    for role in ("base", "tuned"):
        for split, acc in (zeroshot.get(role) or {}).items():
            rows.append({"model": role, "split": split, "accuracy": format_value(acc, percent=True)})
    if rows:
        st.dataframe(pd.DataFrame(rows).pivot(index="split", columns="model", values="accuracy").reset_index(),
                     hide_index=True)
    wise = wise_frame(zeroshot)
    if wise.empty:
        st.caption("No WiSE-FT sweep in this run (zeroshot.json has no \"wise\" list).")
        return
    st.subheader("WiSE-FT: interpolating base and fine-tuned weights")
    gap_cols = [c for c in wise.columns if "gap" in str(c)]
    splits = [c for c in wise.columns if c != "alpha" and c not in gap_cols
              and pd.api.types.is_numeric_dtype(wise[c])]
    long = wise.melt(id_vars="alpha", value_vars=splits, var_name="split", value_name="accuracy")
    left, right = st.columns(2)
    left.altair_chart(charts.wise_accuracy(long), width="stretch")
    if gap_cols and splits:
        domain = "test" if "test" in splits else splits[-1]
        right.altair_chart(charts.wise_tradeoff(wise, domain, gap_cols[0]), width="stretch")
        right.caption(f"Domain accuracy ({md(domain)}) against {md(gap_cols[0])} for each alpha.")
    else:
        right.info("The sweep records no group gap per alpha, so only accuracy is shown.")
    st.dataframe(wise, hide_index=True)
