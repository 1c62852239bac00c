"""A self-contained HTML review report: inline CSS and SVG, no scripts, every user string escaped."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence

import pandas as pd

from workbench.report import tables
from workbench.report.provenance import provenance_rows
from workbench.report.results import AuditResults, RunInfo
from workbench.report.text import escape_html as e
from workbench.report.text import format_change, format_estimate, format_value, is_accuracy_like, is_number
from workbench.report.text import check_scope, threshold_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f5f5f5}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.warn{background:#ef6c00}.fail{background:#c62828}.inconclusive{background:#757575}
tr.regression td{background:#fdecea}.small{color:#ef6c00;font-weight:600}.muted{color:#666;font-size:.85rem}
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


def _checks_section(summary: dict) -> str:
    verdict = str(summary.get("verdict", "inconclusive"))
    out = [f'<h2>Release gate</h2><p>Verdict: <span class="verdict {e(verdict)}">{e(verdict.upper())}</span></p>']
    checks = [c for c in summary.get("checks") or [] if isinstance(c, dict)]
    rows, classes = [], []
    for c in checks:
        pct = is_accuracy_like(str(c.get("metric", "")))
        rows.append([c.get("name", ""), c.get("verdict", ""), c.get("metric", ""), c.get("model", ""),
                     " / ".join(check_scope(c)),
                     format_estimate(c.get("value"), c.get("ci_low"), c.get("ci_high"), percent=pct),
                     threshold_text(c),
                     c.get("reason", "")])
        classes.append("regression" if c.get("verdict") == "fail" else "")
    if rows:
        out.append(_table(["check", "verdict", "metric", "model", "scope", "value [interval]",
                           "thresholds", "reason"], rows, classes))
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
    return "".join(out) if len(out) > 1 else ""


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
            _checks_section(audit.summary), _accuracy_section(audit), _disparity_section(audit),
            _skew_section(audit), _training_section(run),
            "<h2>Provenance</h2>", _table(["item", "value"], provenance_rows(run, audit))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")

