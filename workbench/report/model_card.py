"""A model-card section in Hugging Face's format: YAML metadata (base_model, model-index) plus
"Evaluation" and "Bias, Risks, and Limitations" sections built from the audit results."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from workbench.report import tables
from workbench.report.mitigation import run_mitigation_markdown
from workbench.report.provenance import find_key
from workbench.report.results import AuditResults, RunInfo
from workbench.report.text import escape_md as m
from workbench.report.text import format_change, format_delta, format_estimate, format_value
from workbench.report.verdict import ROW_HEADER, model_phrase

# A hub id is "name" or "owner/name" of letters, digits, "-", "_", "."; anything else is a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def base_model_id(run: RunInfo, audit: AuditResults) -> str | None:
    """The base model as recorded by training or the audit, when it is a hub id (not a local folder)."""
    candidates = [(run.base_model or {}).get("model"), ((audit.summary.get("models") or {}).get("base") or {}).get("model")]
    for c in candidates:
        if isinstance(c, str) and _HUB_ID.match(c) and not Path(c).exists():
            return c
    return None


ROLE_NAMES = {"base": "base", "tuned": "fine-tuned", "delta": "change (fine-tuned − base)"}


def _estimate_or_change(r) -> str:
    if r["model"] == "delta":
        return format_change(r["value"], r["ci_low"], r["ci_high"])
    return format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True)


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _md_table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _metadata(run: RunInfo, audit: AuditResults) -> dict:
    data = audit.summary.get("data") or {}
    overall = tables.overall_accuracy(audit.table).set_index("model")
    meta: dict = {}
    base = base_model_id(run, audit)
    if base:
        meta["base_model"] = base
    meta["tags"] = ["clip", "zero-shot-image-classification", "fairness-audit"]
    meta["pipeline_tag"] = "zero-shot-image-classification"
    # The card describes the candidate (the released model), never its reference.
    candidate = audit.verdict.candidate
    role = candidate if candidate in overall.index else None
    if role is not None:
        r = overall.loc[role]
        name = f"zero-shot top-1 accuracy, interval [{format_value(r['ci_low'])}, {format_value(r['ci_high'])}], n={int(r['n'])}"
        meta["model-index"] = [{
            "name": run.name,
            "results": [{
                "task": {"type": "zero-shot-image-classification", "name": "Zero-shot image classification"},
                "dataset": {"name": str(data.get("source", "")), "type": str(data.get("source", "")),
                            "split": str(data.get("split", ""))},
                "metrics": [{"type": "accuracy", "value": round(float(r["value"]), 4), "name": name}],
            }],
        }]
    return meta


def _provenance_lines(run: RunInfo) -> list[str]:
    """Which snapshot of the base model and of the data the run used (resolved hub commits when known)."""
    base = run.base_model or {}
    config = run.config or {}
    out = []
    if base.get("model"):
        pinned = base.get("commit") or base.get("revision")
        out.append(f"Fine-tuned from {m(base['model'])}" + (f" at commit {m(pinned)}" if pinned else "") + ".")
    dataset = (config.get("config") or {}).get("dataset")
    if dataset:
        commit = config.get("dataset_commit")
        out.append(f"Training data: {m(dataset)}" + (f" at commit {m(commit)}" if commit else "") + ".")
    return [" ".join(out), ""] if out else []


def render_model_card(run: RunInfo, audit: AuditResults) -> str:
    """Markdown with YAML front matter; every user-supplied string escaped."""
    table = audit.table
    summary = audit.summary
    data = summary.get("data") or {}
    level = find_key(summary.get("bootstrap") or {}, "level") or find_key(summary.get("spec") or {}, "level")
    interval = f"{float(level) * 100:.0f}% bootstrap interval" if isinstance(level, (int, float)) else "bootstrap interval"
    boot = summary.get("bootstrap") or {}
    lines = ["---", yaml.safe_dump(_metadata(run, audit), sort_keys=False, allow_unicode=True).rstrip(), "---", ""]

    lines += ["## Evaluation", "",
              f"Zero-shot top-1 accuracy on {m(data.get('source', ''))} (split {m(data.get('split', ''))}, "
              f"n={m(data.get('n', ''))}); values are shown with their {interval} "
              f"({m(boot.get('n_boot', '?'))} resamples, stratified by {m(', '.join(map(str, boot.get('stratified_by') or [])) or 'nothing')}).", "",
              *_provenance_lines(run), "### Results", ""]
    overall = tables.overall_accuracy(table)
    lines += _md_table(["model", "accuracy [interval]", "n"],
                       [[ROLE_NAMES.get(r["model"]) or m(r["model"]), _estimate_or_change(r), int(r["n"])]
                        for _, r in overall.iterrows()])
    for attribute in tables.attributes(table, audit.attribute_order):
        if tables.is_intersection(attribute):
            continue
        if audit.compares:
            comparison = tables.accuracy_comparison(table, attribute)
            lines += [f"#### By {m(attribute)}", ""]
            lines += _md_table(["group", "n", "base", "fine-tuned", "change"],
                               [[m(r["group"]), int(r["n"]),
                                 format_estimate(r["base"], r["base_low"], r["base_high"], percent=True),
                                 format_estimate(r["tuned"], r["tuned_low"], r["tuned_high"], percent=True),
                                 format_change(r["delta"], r["delta_low"], r["delta_high"])
                                 + (" (drop)" if r["regression"] else "")] for _, r in comparison.iterrows()])
        else:
            acc = tables.group_accuracy(table, attribute)
            lines += [f"#### By {m(attribute)}", ""]
            lines += _md_table(["model", "group", "n", "accuracy [interval]"],
                               [[m(r["model"]), m(r["group"]), int(r["n"]),
                                 format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True)]
                                for _, r in acc.iterrows()])

    lines += ["## Bias, Risks, and Limitations", ""]
    verdict = audit.verdict
    subject = model_phrase(verdict.candidate, verdict.candidate_id)
    lines += [f"Pre-release fairness audit **{m(summary.get('audit', audit.name))}** of {m(subject)}: verdict "
              f"**{m(verdict.verdict)}**.", "", f"> {m(verdict.headline)}", ""]
    if verdict.checks:
        lines += [f"Checks on {m(subject)} (these decide the verdict):", ""]
        lines += _md_table(ROW_HEADER, [[m(x) for x in c.row()] for c in verdict.ordered_checks()])
    if verdict.fixed:
        lines += ["Fixed by fine-tuning:", "", *(f"- {m(x)}" for x in verdict.fixed), ""]
    if verdict.reference_checks:
        reference = model_phrase(verdict.reference or "", verdict.reference_id)
        lines += [f"For context only, the same checks on {m(reference)}, which is not this model and does not "
                  "decide its verdict:", ""]
        lines += _md_table(ROW_HEADER, [[m(x) for x in c.row()] for c in verdict.reference_checks])
    if audit.compares:
        drops = []
        for attribute in tables.attributes(table, audit.attribute_order):
            comparison = tables.accuracy_comparison(table, attribute)
            for _, r in comparison[comparison["regression"]].iterrows():
                certainty = "interval wholly below zero" if r["confirmed"] else "interval includes zero"
                drops.append(f"- {m(attribute)} = {m(r['group'])}: {format_delta(r['delta'])} "
                             f"({certainty}, n={int(r['n'])})")
        if drops:
            lines += ["Groups whose zero-shot accuracy falls after fine-tuning:", "", *drops, ""]
        else:
            lines += ["No audited group's zero-shot accuracy falls after fine-tuning.", ""]
    else:
        lines += [f"Only {m(', '.join(audit.roles))} was audited, so this card does not compare it with the "
                  "base model.", ""]
    skew_lines = []
    for attribute in tables.attributes(table, audit.attribute_order):
        for k in tables.ranking_ks(table):
            for target in tables.ranking_targets(table):
                agg = tables.skew_aggregates(table, attribute, k, target)
                for role in audit.roles:
                    vals = agg[agg["model"] == role].set_index("metric")["value"]
                    if "max_skew_mean" in vals:
                        skew_lines.append(f"- {m(attribute)}, k={k}, target {m(target)}, {m(role)}: MaxSkew mean "
                                          f"{format_value(vals['max_skew_mean'])}"
                                          + (f" (std over prompts {format_value(vals['max_skew_std'])})"
                                             if "max_skew_std" in vals else ""))
    if skew_lines:
        lines += ["Association skew of neutral prompts (Skew@k, Geyik et al. 2019):", "", *skew_lines, ""]
    min_n = audit.min_group_size
    acc = table[table["metric"] == "accuracy"]
    small = sorted({(a, g, int(n)) for a, g, n, s in zip(acc["attribute"], acc["group"], acc["n"], acc["status"])
                    if s == "small_group" and g})
    caveats = []
    if small:
        caveats.append("Groups below the minimum size" + (f" of {min_n}" if min_n else "") + ": "
                       + ", ".join(f"{m(a)} = {m(g)} (n={n})" for a, g, n in small[:20])
                       + ("; ..." if len(small) > 20 else "") + ". Their values are uncertain.")
    if summary.get("n_tests"):
        caveats.append(f"{int(summary['n_tests'])} statistical tests ran; some intervals miss by chance.")
    for item in summary.get("not_computed") or []:
        if isinstance(item, dict):
            caveats.append(f"Not computed: {m(item.get('metric', ''))} ({m(item.get('reason', ''))}).")
    for w in summary.get("warnings") or []:
        caveats.append(f"Warning: {m(w)}")
    caveats.append("The audit measures the groups and prompts it was given on one dataset; groups, prompts and "
                   "uses it did not cover are not vouched for.")
    lines += run_mitigation_markdown(run.folder)
    lines += ["Limitations of this evaluation:", "", *(f"- {c}" for c in caveats), ""]
    return "\n".join(lines)
