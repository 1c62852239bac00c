"""A self-contained HTML review report: inline CSS and SVG, no scripts, every user string escaped."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence

import pandas as pd

from workbench.report import retrieval_auc, tables
from workbench.report.mitigation import run_mitigation_html
from workbench.report.provenance import provenance_rows
from workbench.report.results import AuditResults, RunInfo
from workbench.report.text import escape_html as e
from workbench.report.text import format_change, format_estimate, format_value, is_number
from workbench.report.verdict import ROW_HEADER, CheckView, Verdict, model_phrase, role_words

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f5f5f5}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.warn{background:#ef6c00}.fail{background:#c62828}.inconclusive{background:#757575}
tr.regression td{background:#fdecea}.small{color:#ef6c00;font-weight:600}.muted{color:#666;font-size:.85rem}
.headline{font-size:1.1rem}details{margin:.5rem 0 1rem}summary{cursor:pointer;font-weight:600}
"""

MODEL_LABELS = {"base": "base", "tuned": "fine-tuned", "delta": "change (fine-tuned − base)"}


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], row_classes: Iterable[str] | None = None) -> str:
    classes = list(row_classes) if row_classes is not None else None
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{e(classes[i])}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def dumbbell_svg(comparison: pd.DataFrame) -> str:
    """Base (grey) and fine-tuned (blue) accuracy per group with intervals; a red link marks a drop."""
    left, right, row_h, top = 150, 560, 30, 24
    height = top + row_h * len(comparison) + 26
    x = lambda v: left + (right - left) * min(max(float(v), 0.0), 1.0)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{right + 110}" height="{height}" role="img" '
             f'aria-label="accuracy per group, base and fine-tuned">',
             f'<text x="{left}" y="14" font-size="11" fill="#8c8c8c">● base</text>',
             f'<text x="{left + 60}" y="14" font-size="11" fill="#1f77b4">● fine-tuned</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 4}" y2="{height - 20}" stroke="#eee"/>'
                     f'<text x="{x(tick):.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{int(tick*100)}%</text>')
    for i, (_, r) in enumerate(comparison.iterrows()):
        y = top + row_h * i + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{e(r["group"])}</text>')
        parts.append(f'<text x="{right + 8}" y="{y + 4:.1f}" font-size="11" fill="#555">n={int(r["n"])}'
                     + (" ⚠" if r["status"] == "small_group" else "") + "</text>")
        if is_number(r["base"]) and is_number(r["tuned"]):
            color = "#d62728" if r["regression"] else "#9ecae1"
            parts.append(f'<line x1="{x(r["base"]):.1f}" x2="{x(r["tuned"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="{color}" stroke-width="4"/>')
        for role, color, dy in (("base", "#8c8c8c", -5), ("tuned", "#1f77b4", 5)):
            if is_number(r[f"{role}_low"]) and is_number(r[f"{role}_high"]):
                parts.append(f'<line x1="{x(r[f"{role}_low"]):.1f}" x2="{x(r[f"{role}_high"]):.1f}" '
                             f'y1="{y + dy:.1f}" y2="{y + dy:.1f}" stroke="{color}" stroke-width="1.5"/>')
            if is_number(r[role]):
                parts.append(f'<circle cx="{x(r[role]):.1f}" cy="{y + dy:.1f}" r="5" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _check_rows(checks: Sequence[CheckView], verdict: Verdict, *, with_reference: bool) -> list[list[object]]:
    rows = []
    for c in checks:
        row: list[object] = c.row()
        if with_reference:
            row.append(c.reference_text or "n/a")
        rows += [row + [c.thresholds, c.reason]]
    return rows


def _checks_section(audit: AuditResults) -> str:
    """The candidate's verdict and checks (regressions highlighted, first), the reference's checks as
    collapsed context: the same verdict and rows as the dashboard's release gate."""
    summary = audit.summary
    verdict = audit.verdict
    v = verdict.verdict
    out = ['<h2>Release gate</h2>',
           f'<p class="headline"><span class="verdict {e(v)}">{e(v.upper())}</span> {e(verdict.headline_body)}</p>']
    judged = f"Judged: {model_phrase(verdict.candidate, verdict.candidate_id)}."
    if verdict.reference:
        judged += (f" Reference: {model_phrase(verdict.reference, verdict.reference_id)}, for comparison and "
                   "regression checks only; its own results never decide the verdict.")
    if verdict.derived:
        judged += (" This audit predates the candidate/reference verdict (summary schema 1): the candidate, its "
                   "verdict and the sentences are derived from its check rows.")
    out.append(f'<p class="muted">{e(judged)}</p>')
    checks = verdict.ordered_checks()
    with_reference = verdict.reference is not None
    header = ROW_HEADER + ([f"{role_words(verdict.reference or '')} value [CI]"] if with_reference else []) \
        + ["thresholds", "reason"]
    if checks:
        out.append(_table(header, _check_rows(checks, verdict, with_reference=with_reference),
                          ["regression" if c.highlighted else "" for c in checks]))
        highlighted = [c for c in checks if c.highlighted]
        if highlighted:
            out.append("<p>Regressions: " + "; ".join(e(c.sentence) for c in highlighted) + ".</p>")
    else:
        out.append("<p>The audit definition has no policy checks on the candidate.</p>")
    if verdict.fixed:
        out.append("<h3>Fixed by fine-tuning</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in verdict.fixed) + "</ul>")
    if verdict.reference_checks:
        failing = sum(1 for c in verdict.reference_checks if c.verdict == "fail")
        out.append(f"<details><summary>Context: the {e(verdict.reference_words)} model's own checks "
                   f"({len(verdict.reference_checks)}, {failing} failing); they do not decide the verdict</summary>"
                   + _table(ROW_HEADER + ["thresholds", "reason"],
                            _check_rows(verdict.reference_checks, verdict, with_reference=False))
                   + "</details>")
    if summary.get("n_tests"):
        out.append(f'<p class="muted">{e(summary["n_tests"])} statistical tests ran in this audit.</p>')
    for w in summary.get("warnings") or []:
        out.append(f'<p class="small">Warning: {e(w)}</p>')
    for item in summary.get("not_computed") or []:
        if isinstance(item, dict):
            out.append(f'<p class="muted">Not computed: {e(item.get("metric", ""))}: {e(item.get("reason", ""))}</p>')
    return "".join(out)


def _accuracy_section(audit: AuditResults) -> str:
    table = audit.table
    out = ["<h2>Base versus fine-tuned</h2>"]
    overall = tables.overall_accuracy(table)
    out.append(_table(["model", "zero-shot accuracy [interval]", "n"],
                      [[MODEL_LABELS.get(r["model"], r["model"]),
                        format_change(r["value"], r["ci_low"], r["ci_high"]) if r["model"] == "delta"
                        else format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True), r["n"]]
                       for _, r in overall.iterrows()]))
    if not audit.compares:
        out.append(f'<p>Only {e(", ".join(audit.roles))} was audited: no comparison to show.</p>')
    for attribute in tables.attributes(table, audit.attribute_order):
        if audit.compares:
            comparison = tables.accuracy_comparison(table, attribute)
            if comparison.empty:
                continue
            out.append(f"<h3>{e(attribute)}</h3>")
            if not tables.is_intersection(attribute):
                out.append(dumbbell_svg(comparison))
            rows = [[r["group"], r["n"], format_estimate(r["base"], r["base_low"], r["base_high"], percent=True),
                     format_estimate(r["tuned"], r["tuned_low"], r["tuned_high"], percent=True),
                     format_change(r["delta"], r["delta_low"], r["delta_high"]),
                     "regression" if r["regression"] else "", r["status"]] for _, r in comparison.iterrows()]
            out.append(_table(["group", "n", "base", "fine-tuned", "delta", "flag", "status"], rows,
                              ["regression" if r else "" for r in comparison["regression"]]))
        else:
            acc = tables.group_accuracy(table, attribute)
            out.append(f"<h3>{e(attribute)}</h3>")
            out.append(_table(["model", "group", "n", "accuracy [interval]", "status"],
                              [[r["model"], r["group"], r["n"], format_estimate(r["value"], r["ci_low"], r["ci_high"],
                                                                                percent=True), r["status"]]
                               for _, r in acc.iterrows()]))
    return "".join(out)


def _disparity_section(audit: AuditResults) -> str:
    out = ["<h2>Disparity versus the reference group</h2>"]
    for attribute in tables.attributes(audit.table, audit.attribute_order):
        if tables.is_intersection(attribute):
            continue
        for role in audit.roles:
            reference = audit.reference_group(attribute) or tables.audit_reference_group(audit.table, attribute, role)
            if reference is None:
                continue
            frame = tables.disparity(audit.table, attribute, role, reference, reference)
            out.append(f"<h3>{e(attribute)}, {e(MODEL_LABELS.get(role, role))}, reference {e(reference)}</h3>")
            out.append(_table(["group", "n", "difference [interval]", "ratio [interval]", "status"],
                              [[r["group"], r["n"], format_change(r["difference"], r["difference_low"],
                                                                  r["difference_high"]),
                                format_estimate(r["ratio"], r["ratio_low"], r["ratio_high"]), r["status"]]
                               for _, r in frame.iterrows()]))
    return "".join(out) if len(out) > 1 else ""


def _skew_section(audit: AuditResults) -> str:
    table = audit.table
    out = ["<h2>Association skew</h2>"]
    for attribute in tables.attributes(table, audit.attribute_order):
        for k in tables.ranking_ks(table):
            for target in tables.ranking_targets(table):
                stats = tables.prompt_skew_stats(table, attribute, k, target)
                stats = stats[stats["model"] != "delta"]
                if stats.empty:
                    continue
                wide = stats.assign(shown=[format_estimate(v, lo, hi) for v, lo, hi in
                                           zip(stats["value"], stats["ci_low"], stats["ci_high"])])
                wide = wide.pivot_table(index=["prompt", "model"], columns="metric", values="shown",
                                        aggfunc="first").reset_index()
                metrics = [m for m in tables.PROMPT_SKEW_METRICS if m in wide.columns]
                out.append(f"<h3>{e(attribute)}, k={k}, target {e(target)}</h3>")
                out.append(_table(["prompt", "model", *metrics],
                                  [[r["prompt"], MODEL_LABELS.get(r["model"], r["model"]), *(r[m] for m in metrics)]
                                   for _, r in wide.iterrows()]))
                agg = tables.skew_aggregates(table, attribute, k, target)
                if len(agg):
                    out.append(_table(["model", "metric", "value"],
                                      [[r["model"], r["metric"], format_value(r["value"])] for _, r in agg.iterrows()]))
                out.append(_specific_and_dominance(audit, attribute, k, target))
    return "".join(out) if len(out) > 1 else ""


def _specific_and_dominance(audit: AuditResults, attribute: str, k: int, target: str) -> str:
    """Raw MaxSkew beside specific MaxSkew per prompt, and group dominance with its sentence."""
    out = []
    both = tables.prompt_skew_comparison(audit.table, attribute, k, target)
    if len(both) and not both["specific"].isna().all():
        out.append(f"<h4>Raw and specific MaxSkew@{k} (specific: beyond the control prompts)</h4>")
        out.append(_table(["prompt", "model", "attribute", f"MaxSkew@{k} [CI]", "over-represented",
                           f"specific MaxSkew@{k} [CI]", "over-represented (specific)", "n"],
                          [[r["prompt"], MODEL_LABELS.get(r["model"], r["model"]), attribute,
                            format_estimate(r["max_skew"], r["max_skew_low"], r["max_skew_high"]), r["max_skew_group"],
                            format_estimate(r["specific"], r["specific_low"], r["specific_high"]),
                            r["specific_group"], r["n"]] for _, r in both.iterrows()]))
    rows = tables.group_dominance(audit.table, attribute, k, target)
    dominance = rows[rows["metric"] == "group_dominance"]
    if len(dominance):
        control = rows[rows["metric"] == "control_max_skew_mean"].set_index("model")
        checks = [c for c in audit.verdict.checks + audit.verdict.reference_checks
                  if c.kind == "dominance" and c.attribute == attribute and c.k in (0, k) and c.target in ("", target)]
        out.append("<h4>Group dominance</h4>")
        out.append(_table(["model", "attribute", "group dominance [CI]", "n", f"control prompts' mean MaxSkew@{k} [CI]"],
                          [[MODEL_LABELS.get(r["model"], r["model"]), attribute,
                            format_estimate(r["value"], r["ci_low"], r["ci_high"]), r["n"],
                            format_estimate(control.loc[r["model"], "value"], control.loc[r["model"], "ci_low"],
                                            control.loc[r["model"], "ci_high"]) if r["model"] in control.index
                            else "n/a"] for _, r in dominance.iterrows()]))
        for c in checks:
            out.append(f"<p>{e(c.sentence)}</p>")
    return "".join(out)


def _weat_section(audit: AuditResults) -> str:
    weat = tables.weat_tests(audit.table, audit.summary.get("weat_tests") or [])
    if weat.empty:
        return ""
    rows = [[MODEL_LABELS.get(r["model"], r["model"]), r["attribute"], r["group"], r["prompt"],
             format_estimate(r["value"], r["ci_low"], r["ci_high"]), r["direction"], r["n"],
             format_value(r["p_value"], digits=4), format_value(r["p_holm"], digits=4),
             "yes" if is_number(r["p_holm"]) and r["p_holm"] < 0.05 else "no"] for _, r in weat.iterrows()]
    return ("<h2>Group-prompt association (WEAT-style)</h2>"
            '<p class="muted">Effect size: how much closer one group\'s images are than the other\'s to a prompt '
            "naming their group rather than the other group, in pooled standard deviations; p from a permutation "
            "test, Holm-adjusted over every group-prompt test.</p>"
            + _table(["model", "attribute", "groups", "prompt", "effect size [CI]", "direction", "n", "p", "p (Holm)",
                      "significant after Holm"], rows,
                     ["regression" if row[-1] == "yes" else "" for row in rows]))


def _harmful_section(audit: AuditResults) -> str:
    out = []
    for attribute in tables.attributes(audit.table, audit.attribute_order):
        rates = tables.harmful_rates(audit.table, attribute)
        if rates.empty:
            continue
        out.append(f"<h3>{e(attribute)}</h3>")
        out.append(_table(["model", "attribute", "group", "label", "rate [CI]", "direction", "n", "status"],
                          [[MODEL_LABELS.get(r["model"], r["model"]), attribute, r["group"],
                            r["label"] or "any harmful label",
                            format_change(r["value"], r["ci_low"], r["ci_high"]) if r["model"] == "delta"
                            else format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True),
                            r["direction"], r["n"], r["status"]]
                           for _, r in rates.iterrows()]))
    if not out:
        return ""
    return ("<h2>Harmful labels</h2><p class=\"muted\">Share of each group's images whose top zero-shot label is a "
            "harmful label, per label and for any harmful label.</p>" + "".join(out))


def _frame_table(frame: pd.DataFrame) -> str:
    """A table of display strings (workbench.report.retrieval_auc): its columns are the header."""
    return _table(list(frame.columns), frame.astype(str).values.tolist())


def _retrieval_section(audit: AuditResults) -> str:
    """Recall@k per group for base and fine-tuned with intervals and changes, the worst-over-best ratio and
    the mean rank, per attribute and direction: the dashboard's 'Retrieval & AUC' tables."""
    table = audit.table
    if not retrieval_auc.has_retrieval(table):
        return ""
    out = ["<h2>Caption retrieval</h2>",
           '<p class="muted">Each image and its caption form a query pair. Image → text: the image searches every '
           "distinct caption of the split; text → image: the caption searches every image. Recall@k is the share of "
           "a group's query pairs whose match ranks in the top k (Wilson interval); a difference is the group's "
           "Recall@k minus the reference group's (Newcombe interval); the change is fine-tuned minus base; "
           "worst/best is the worst group's Recall@k over the best group's (1 = equal).</p>"]
    for attribute in tables.attributes(table, audit.attribute_order):
        parts = []
        for direction in tables.retrieval_directions(table):
            for k in tables.retrieval_ks(table):
                recall = retrieval_auc.recall_table(table, attribute, direction, k)
                if recall.empty:
                    continue
                raw = tables.retrieval_recall(table, attribute, direction, k)
                parts.append(f"<h4>Recall@{k}, {e(tables.RETRIEVAL_DIRECTION_WORDS.get(direction, direction))}, by "
                             f"{e(attribute)}</h4>")
                parts.append(_table(list(recall.columns), recall.astype(str).values.tolist(),
                                    ["regression" if c else "" for c in raw["confirmed"]]))
        ratio = retrieval_auc.min_ratio_table(table, attribute)
        if len(ratio):
            parts.append("<h4>Worst group's Recall@k over the best group's</h4>" + _frame_table(ratio))
        for direction in tables.retrieval_directions(table):
            rank = retrieval_auc.mean_rank_table(table, attribute, direction)
            if len(rank):
                parts.append(f"<details><summary>Mean rank of the match, {e(direction)} (lower is better)</summary>"
                             + _frame_table(rank) + "</details>")
        if parts:
            out.append(f"<h3>{e(attribute)}</h3>" + "".join(parts))
    return "".join(out)


def _auc_section(audit: AuditResults) -> str:
    """Per-class AUC overall and per group with the equity-scaled AUC, per attribute (Harvard-FairVLMed layout)."""
    table = audit.table
    if not retrieval_auc.has_auc(table):
        return ""
    out = ["<h2>AUC per group and equity-scaled AUC</h2>",
           '<p class="muted">One-vs-rest ROC AUC of each class from the zero-shot scores, over all images and within '
           "each group (percentile intervals of the audit's bootstrap). ES-AUC = AUC / (1 + sum over groups "
           "|AUC of the group − AUC|) (Luo et al. 2024); change: fine-tuned − base.</p>"]
    for attribute in tables.attributes(table, audit.attribute_order):
        frame = retrieval_auc.auc_table(table, attribute, audit.roles)
        if len(frame):
            out.append(f"<h3>{e(attribute)}</h3>" + _frame_table(frame))
    return "".join(out) if len(out) > 2 else ""


def _training_section(run: RunInfo) -> str:
    zeroshot = run.zeroshot or {}
    out = []
    rows = [[role, split, format_value(acc, percent=True)] for role in ("base", "tuned")
            for split, acc in (zeroshot.get(role) or {}).items()]
    if rows:
        out.append("<h2>Training</h2>" + _table(["model", "split", "zero-shot accuracy"], rows))
    wise = [w for w in zeroshot.get("wise") or [] if isinstance(w, dict)]
    if wise:
        keys = list(dict.fromkeys(k for w in wise for k in w))
        out.append("<h3>WiSE-FT sweep</h3>" + _table(keys, [[format_value(w.get(k)) if is_number(w.get(k))
                                                             else w.get(k, "") for k in keys] for w in wise]))
    if run.train_log is not None and not run.train_log.empty and "loss" in run.train_log.columns:
        last = run.train_log.dropna(subset=["loss"]).iloc[-1]
        out.append(f'<p class="muted">Last logged step {e(last.get("step"))}: loss {e(format_value(last["loss"]))}.</p>')
    return "".join(out)


def render_html(run: RunInfo, audit: AuditResults) -> str:
    """The review report of one audit of one run, as a single HTML document."""
    title = f"Fairness review: {run.name} / {audit.name}"
    data = audit.summary.get("data") or {}
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{e(title)}</h1>",
            f'<p class="muted">Data {e(data.get("source", ""))} (split {e(data.get("split", ""))}, '
            f'n={e(data.get("n", ""))}); audit created {e(audit.summary.get("created", ""))}; '
            f"report written {e(created)}.</p>",
            _checks_section(audit), _accuracy_section(audit), _disparity_section(audit),
            _skew_section(audit), _weat_section(audit), _harmful_section(audit), _retrieval_section(audit),
            _auc_section(audit), _training_section(run),
            run_mitigation_html(run.folder),
            "<h2>Provenance</h2>", _table(["item", "value"], provenance_rows(run, audit))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")

