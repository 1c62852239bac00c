"""Release gate: the verdict on the candidate model, its checks as cards, the reference as context.

The headline sentence comes first. Only the candidate's checks decide it (absolute checks on the
candidate, regression and domain checks against the reference, group dominance); regressions are
highlighted and shown first. The reference's own checks sit in a collapsed context section: a
base-model failure must never read as the released model's.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report.verdict import ROW_HEADER, CheckView, Verdict, model_phrase, role_words
from views.common import VERDICT_COLORS, VERDICT_ICONS, ViewContext, md, need_audit

ANSWERS = {
    "pass": "Yes: every check on the candidate passes.",
    "warn": "Yes, with warnings: read the amber checks before release.",
    "fail": "No: the candidate fails at least one check.",
    "inconclusive": "Not decidable: the data cannot settle at least one check (interval straddles the "
                    "threshold or a group is too small).",
}


def reference_column(verdict: Verdict) -> str:
    return f"{role_words(verdict.reference or 'reference')} value [CI]"


def check_table(checks: list[CheckView], verdict: Verdict, *, with_reference: bool) -> pd.DataFrame:
    """The shared row shape (check, model, attribute, group, direction, value [CI], n, status), the
    reference's value of the same metric beside it, and whether the row is a highlighted regression."""
    rows = []
    for c in checks:
        row = dict(zip(ROW_HEADER, c.row()))
        if with_reference:
            row[reference_column(verdict)] = c.reference_text or "n/a"
            row["regression"] = "yes" if c.highlighted else ""
        rows.append(row)
    columns = ROW_HEADER + ([reference_column(verdict), "regression"] if with_reference else [])
    return pd.DataFrame(rows, columns=columns)


def _card(check: CheckView, verdict: Verdict) -> None:
    v = check.verdict
    st.markdown(f"{VERDICT_ICONS.get(v, '')} :{VERDICT_COLORS.get(v, 'gray')}[**{md(v.upper())}**] "
                f"{md(check.check_text)}")
    if check.highlighted:
        why = ("Regression against the " + md(verdict.reference_words or "reference")
               if check.kind in ("regression", "domain") else
               f"New failure: the {md(verdict.reference_words or 'reference')} did not fail this check")
        st.error(f"**{why}.** {md(check.sentence)}")
    else:
        st.markdown(md(check.sentence))
    st.markdown(f"**{md(check.model)}** · attribute {md(check.attribute or 'all')} · group "
                f"{md(check.group_text)} · {md(check.direction or 'no direction recorded')}")
    st.markdown(f"**{md(check.value_text)}** (n={md(check.n_text)}); {md(check.thresholds)}")
    if verdict.reference and check.reference_text:
        st.markdown(f"{md(model_phrase(verdict.reference, verdict.reference_id))}: {md(check.reference_text)}"
                    + (f" ({md(check.reference_verdict)})" if check.reference_verdict else ""))
    if check.reason:
        st.caption(md(check.reason))


def render(ctx: ViewContext) -> None:
    st.header("Release gate")
    if not need_audit(ctx):
        return
    summary = ctx.audit.summary
    verdict = ctx.audit.verdict
    color = VERDICT_COLORS.get(verdict.verdict, "gray")
    st.markdown(f"### :{color}-background[{md(verdict.verdict.upper())}] {md(verdict.headline_body)}")
    st.markdown(f"**Can this ship?** {ANSWERS.get(verdict.verdict, md(verdict.verdict))}")
    judged = f"Judged: {md(model_phrase(verdict.candidate, verdict.candidate_id))}."
    if verdict.reference:
        judged += (f" Reference: {md(model_phrase(verdict.reference, verdict.reference_id))}, for comparison and "
                   "regression checks only; its own results never decide the verdict.")
    st.caption(judged)
    if verdict.derived:
        st.caption("This audit predates the candidate/reference verdict (summary schema 1): the candidate, its "
                   "verdict and these sentences are derived from its check rows; re-run the audit for the "
                   "audit's own sentences.")
    counts = verdict.counts
    for col, (v, count) in zip(st.columns(4), counts.items()):
        col.metric(v, count)
    checks = verdict.ordered_checks()
    if not checks:
        st.info("The audit definition has no policy checks on the candidate, so there is nothing to gate on.")
    highlighted = [c for c in checks if c.highlighted]
    if highlighted:
        st.subheader(f"Regressions ({len(highlighted)})")
    cols = st.columns(3)
    for i, check in enumerate(checks):
        with cols[i % 3].container(border=True):
            _card(check, verdict)
    if checks:
        st.dataframe(check_table(checks, verdict, with_reference=verdict.reference is not None),
                     hide_index=True, width="stretch")
    if verdict.fixed:
        st.subheader(f"Fixed by fine-tuning ({len(verdict.fixed)})")
        for sentence in verdict.fixed:
            st.success(md(sentence))
    if verdict.reference_checks:
        failing = [c for c in verdict.reference_checks if c.verdict == "fail"]
        title = (f"Context: the {verdict.reference_words} model's own checks ({len(verdict.reference_checks)}, "
                 f"{len(failing)} failing); they do not decide the verdict")
        with st.expander(md(title), expanded=False):
            for c in failing:
                st.markdown(f"- {md(c.sentence)}")
            st.dataframe(check_table(list(verdict.reference_checks), verdict, with_reference=False),
                         hide_index=True, width="stretch")
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
