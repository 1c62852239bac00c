"""Release gate: the audit policy's checks as cards; the header answers "can this ship?"."""

from __future__ import annotations

import streamlit as st

from workbench.report.text import check_scope, format_estimate, is_accuracy_like, threshold_text
from views.common import VERDICT_COLORS, VERDICT_ICONS, ViewContext, md, need_audit

ANSWERS = {
    "pass": "Yes: every check passes.",
    "warn": "Yes, with warnings: read the amber checks before release.",
    "fail": "No: at least one check fails.",
    "inconclusive": "Not decidable: the data cannot settle at least one check (interval straddles the "
                    "threshold or a group is too small).",
}


def check_line(check: dict) -> str:
    percent = is_accuracy_like(str(check.get("metric", "")))
    where = " / ".join(md(x) for x in check_scope(check))
    value = format_estimate(check.get("value"), check.get("ci_low"), check.get("ci_high"), percent=percent)
    n = f" (n={int(check['n'])})" if isinstance(check.get("n"), (int, float)) and check.get("n") else ""
    return (f"{md(check.get('metric', ''))} of **{md(check.get('model', ''))}**"
            + (f" for {where}" if where else "")
            + f"  \n**{value}**{n}; {threshold_text(check)}")


def render(ctx: ViewContext) -> None:
    st.header("Release gate")
    if not need_audit(ctx):
        return
    summary = ctx.audit.summary
    checks = [c for c in summary.get("checks") or [] if isinstance(c, dict)]
    verdict = str(summary.get("verdict", "inconclusive"))
    color = VERDICT_COLORS.get(verdict, "gray")
    st.markdown(f"### Can this ship? :{color}-background[{md(verdict.upper())}]")
    st.markdown(ANSWERS.get(verdict, md(verdict)))
    counts = {v: sum(1 for c in checks if c.get("verdict") == v) for v in ("pass", "warn", "fail", "inconclusive")}
    for col, (v, count) in zip(st.columns(4), counts.items()):
        col.metric(v, count)
    if not checks:
        st.info("The audit definition has no policy checks, so there is nothing to gate on.")
    cols = st.columns(3)
    for i, check in enumerate(checks):
        v = str(check.get("verdict", "inconclusive"))
        with cols[i % 3].container(border=True):
            st.markdown(f"{VERDICT_ICONS.get(v, '')} :{VERDICT_COLORS.get(v, 'gray')}[**{md(v.upper())}**] "
                        f"{md(check.get('name', ''))}")
            st.markdown(check_line(check))
            if check.get("reason"):
                st.caption(md(check["reason"]))
    n_tests = summary.get("n_tests")
    if n_tests:
        st.caption(f"{int(n_tests)} statistical tests ran in this audit; with that many, some intervals miss by "
                   "chance, so read single borderline results with care.")
    for warning in summary.get("warnings") or []:
        st.warning(md(warning))
    not_computed = summary.get("not_computed") or []
    if not_computed:
        with st.expander(f"Not computed ({len(not_computed)})"):
            for item in not_computed:
                if isinstance(item, dict):
                    st.markdown(f"- `{md(item.get('metric', ''))}`: {md(item.get('reason', ''))}")
