"""Mitigation results on disk (``<run>/variants/summary.json``) and how they are worded.

``python -m workbench.mitigate`` writes the summary; the dashboard's Mitigation view, the
HTML report and the model card read it here. The wording of a remedy's effect lives here
too (one place), so the console, the dashboard and the report say the same sentence.

Summary layout (``MITIGATION_SCHEMA_VERSION`` 1)::

    {"schema_version": 1, "run": <run folder>, "audit": <audit name>, "created": iso time,
     "candidate": "tuned", "reference": "base", "split": ..., "n_boot": int, "seed": int, "level": float,
     "variants": [{"remedy", "role", "label", "folder", "status" ("ok" | "no_model" | "failed"),
                   "verdict", "headline", "sentence", "note", "details": {...}}],
     "points": [{"role", "key", "what", "metric", "percent", "value", "ci_low", "ci_high", "n"}],
     "differences": [{"variant", "key", "what", "metric", "direction", "percent", "candidate_value", ...,
                      "variant_value", ..., "difference", "ci_low", "ci_high", "p_value", "significant",
                      "change" ("better" | "worse" | "none")}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench import schema
from workbench.report.text import escape_html, escape_md, format_estimate, is_number

MITIGATION_DIR = "variants"
MITIGATION_SUMMARY = "summary.json"
MITIGATION_CSV = "summary.csv"
MITIGATION_SCHEMA_VERSION = 1
OVERALL_ACCURACY_KEY = "accuracy|overall"

REMEDY_LABELS = {
    "balance": "balanced fine-tuning",
    "align": "distribution-aligned fine-tuning",
    "project": "the debiasing projection",
    "wise": "fairness-aware WiSE-FT",
}
ROLE_LABELS = {"base": "base", "tuned": "fine-tuned"}
SENTENCE_ROWS = 2  # changes named per direction in a remedy's sentence; the table lists every one
DIFFERENCE_COLUMNS = ["variant", "what", "candidate [CI]", "variant [CI]", "difference [CI]", "change", "training runs"]


def role_label(role: str) -> str:
    return ROLE_LABELS.get(role, REMEDY_LABELS.get(role, role))


def describe_row(metric: str, *, attribute: str = "", group: str = "", prompt: str = "", k: int = 0,
                 worse_group: str = "", better_group: str = "") -> str:
    """What a compared row measures, in words: 'the dark-vs-light accuracy gap (skin_tone)'."""
    attr = f" ({attribute})" if attribute else ""
    if metric == "accuracy" and group in ("", schema.OVERALL):
        return "overall accuracy"
    if metric == "accuracy":
        return f"accuracy of {group}{attr}"
    if metric in ("accuracy_gap", "accuracy_difference"):
        pair = f"{worse_group}-vs-{better_group} " if worse_group and better_group else ""
        return f"the {pair}accuracy gap{attr}"
    if metric == "accuracy_min_ratio":
        return f"the lowest-to-highest group accuracy ratio{attr}"
    at = f"@{k}" if k else ""
    if metric == "specific_max_skew":
        return f"the specific MaxSkew{at} of '{prompt}'{attr}"
    if metric == "specific_skew":
        return f"the specific Skew{at} of '{prompt}' for {group}{attr}"
    if metric == "group_dominance":
        return f"group dominance{at}{attr}"
    if metric == "harmful_rate":
        return f"the harmful-label rate of {group or 'every group'}{attr}"
    where = ", ".join(x for x in (group, f"'{prompt}'" if prompt else "") if x)
    return f"{metric}{at}{attr}" + (f" [{where}]" if where else "")


def _amount(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _signed(value: float, percent: bool) -> str:
    return f"{100 * value:+.1f}" if percent else f"{value:+.3f}"


def _unit(percent: bool) -> str:
    return " points" if percent else ""


def _as_gap(d: Mapping[str, Any]) -> tuple[float, float, float, float, float]:
    """(candidate, variant, difference, low, high) as printed. A signed group difference (say dark minus light,
    both negative) is printed as the size of the gap, so "closed from 30.8 to 12.7" reads as it should."""
    c, v, diff, low, high = (float(d[k]) for k in ("candidate_value", "variant_value", "difference", "ci_low", "ci_high"))
    if d.get("metric") == "accuracy_difference" and c < 0 and v <= 0:
        return -c, -v, -diff, -high, -low
    return c, v, diff, low, high


def difference_clause(d: Mapping[str, Any]) -> str:
    """'the dark-vs-light accuracy gap from 12.0 to 3.0 points (difference -9.0, CI -13.0 to -5.0)'."""
    p = bool(d.get("percent"))
    c, v, diff, low, high = _as_gap(d)
    return (f"{d['what']} from {_amount(c, p)} to {_amount(v, p)}{_unit(p)} "
            f"(difference {_signed(diff, p)}, CI {_signed(low, p)} to {_signed(high, p)})")


def _verb(d: Mapping[str, Any]) -> str:
    c, v, diff, _low, _high = _as_gap(d)
    if d.get("metric") in ("accuracy_gap", "accuracy_difference"):
        return "closed" if abs(v) < abs(c) else "widened"
    return "lowered" if diff < 0 else "raised"


def _listed(rows: Sequence[Mapping[str, Any]]) -> str:
    """The largest :data:`SENTENCE_ROWS` changes as clauses, the rest counted (the table has them all)."""
    ranked = sorted(rows, key=lambda d: -abs(float(d["difference"])) * (100 if d.get("percent") else 1))
    text = " and ".join(f"{_verb(d)} {difference_clause(d)}" for d in ranked[:SENTENCE_ROWS])
    rest = len(ranked) - SENTENCE_ROWS
    return text + (f" (and {rest} more such change{'s' if rest > 1 else ''}, see the table)" if rest > 0 else "")


def remedy_sentence(label: str, differences: Sequence[Mapping[str, Any]], overall: Mapping[str, Any] | None) -> str:
    """One plain sentence: what the remedy significantly changed in the checked metrics, and at what cost.

    ``differences``: the remedy's variant-minus-candidate rows of the checked metrics;
    ``overall``: its row for overall accuracy. Only rows whose interval excludes 0 are named;
    with none (and no significant change in accuracy) the sentence says "no significant change".
    """
    better = [d for d in differences if d.get("significant") and d.get("change") == "better"]
    worse = [d for d in differences if d.get("significant") and d.get("change") == "worse"]
    parts = []
    if better:
        parts.append(_listed(better))
    if worse:
        parts.append(("but " if better else "") + _listed(worse))
    cost = ""
    if overall is not None and is_number(overall.get("difference")):
        p = bool(overall.get("percent", True))
        ci = f"CI {_signed(overall['ci_low'], p)} to {_signed(overall['ci_high'], p)}"
        if overall.get("significant") and overall["difference"] < 0:
            cost = f"at a cost of {_amount(-overall['difference'], p)}{_unit(p)} overall accuracy ({ci})"
        elif overall.get("significant"):
            cost = f"with overall accuracy up {_amount(overall['difference'], p)}{_unit(p)} ({ci})"
        elif parts:
            cost = f"with no significant change in overall accuracy (difference {_signed(overall['difference'], p)}, {ci})"
    if not parts:
        if cost:
            return f"{label}: no significant change in the checked fairness metrics, {cost}"
        return f"{label}: no significant change"
    return f"{label} " + " ".join(parts) + (f" {cost}" if cost else "")


# ---------------------------------------------------------------------------------------- reading


class MitigationError(ValueError):
    """A mitigation summary that cannot be read; the message names the file and the fix."""


def mitigation_dir(run_folder: str | os.PathLike) -> Path:
    return Path(run_folder) / MITIGATION_DIR


def read_mitigation(run_folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run's mitigation summary, None when no remedy was tried yet; MitigationError when unreadable."""
    path = mitigation_dir(run_folder) / MITIGATION_SUMMARY
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MitigationError(f"{path}: unreadable ({err}); rerun python -m workbench.mitigate {run_folder}") from None
    if not isinstance(data, dict) or data.get("schema_version") != MITIGATION_SCHEMA_VERSION:
        raise MitigationError(f"{path}: not a mitigation summary of schema version {MITIGATION_SCHEMA_VERSION}; "
                              f"rerun python -m workbench.mitigate {run_folder}")
    for key in ("variants", "points", "differences"):
        if not isinstance(data.get(key), list):
            raise MitigationError(f"{path}: no {key!r} list; rerun python -m workbench.mitigate {run_folder}")
    return data


def points_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (model role, compared metric): value and interval, for the trade-off chart."""
    cols = ["role", "model", "key", "what", "metric", "percent", "value", "ci_low", "ci_high", "n"]
    rows = [{**p, "model": role_label(str(p.get("role", "")))} for p in summary.get("points", [])]
    frame = pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols)
    for c in ("value", "ci_low", "ci_high"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def tradeoff_frame(summary: Mapping[str, Any], key: str) -> pd.DataFrame:
    """Per role: overall accuracy [CI] and the metric ``key`` [CI] side by side (one trade-off chart)."""
    points = points_frame(summary)
    acc = points[points["key"] == OVERALL_ACCURACY_KEY].set_index("role")
    metric = points[points["key"] == key].set_index("role")
    roles = [r for r in metric.index if r in acc.index]
    return pd.DataFrame({
        "role": roles,
        "model": [role_label(r) for r in roles],
        "accuracy": [acc.loc[r, "value"] for r in roles],
        "accuracy_low": [acc.loc[r, "ci_low"] for r in roles],
        "accuracy_high": [acc.loc[r, "ci_high"] for r in roles],
        "value": [metric.loc[r, "value"] for r in roles],
        "low": [metric.loc[r, "ci_low"] for r in roles],
        "high": [metric.loc[r, "ci_high"] for r in roles],
    })


def compared_metrics(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, description) of every compared metric except overall accuracy, in summary order."""
    seen: dict[str, str] = {}
    for p in summary.get("points", []):
        if p.get("key") != OVERALL_ACCURACY_KEY:
            seen.setdefault(str(p["key"]), str(p.get("what", p["key"])))
    return list(seen.items())


def _estimate(value, low, high, percent: bool) -> str:
    return format_estimate(value, low, high, percent=percent)


def _difference(d: Mapping[str, Any]) -> str:
    p = bool(d.get("percent"))
    if not is_number(d.get("difference")):
        return "n/a"
    text = f"{_signed(d['difference'], p)}{' pp' if p else ''}"
    if is_number(d.get("ci_low")) and is_number(d.get("ci_high")):
        text += f" [{_signed(d['ci_low'], p)}, {_signed(d['ci_high'], p)}]"
    return text


def differences_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The variant-minus-candidate table shown by the dashboard and the report (DIFFERENCE_COLUMNS)."""
    rows = []
    for d in summary.get("differences", []):
        p = bool(d.get("percent"))
        change = d.get("change", "none") if d.get("significant") else "no significant change"
        rows.append({
            "variant": role_label(str(d.get("variant", ""))),
            "what": str(d.get("what", "")),
            "candidate [CI]": _estimate(d.get("candidate_value"), d.get("candidate_ci_low"), d.get("candidate_ci_high"), p),
            "variant [CI]": _estimate(d.get("variant_value"), d.get("variant_ci_low"), d.get("variant_ci_high"), p),
            "difference [CI]": _difference(d),
            "change": str(change),
            # --seeds: a fine-tuning remedy's row compares means over training runs (candidate vs variant)
            "training runs": (f"{d['training_runs_candidate']} vs {d['training_runs_variant']}"
                              if "training_runs_candidate" in d else ""),
        })
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def variants_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    cols = ["remedy", "folder", "status", "verdict", "sentence"]
    rows = [{"remedy": REMEDY_LABELS.get(str(v.get("remedy")), str(v.get("remedy"))),
             "folder": str(v.get("folder", "")), "status": str(v.get("status", "")),
             "verdict": str(v.get("verdict") or ""), "sentence": str(v.get("sentence") or v.get("note") or "")}
            for v in summary.get("variants", [])]
    return pd.DataFrame(rows, columns=cols)


def mitigation_html(summary: Mapping[str, Any]) -> str:
    """The report's Mitigation section: one sentence per remedy and the difference table (escaped)."""
    items = "".join(f"<li>{escape_html(s)}</li>" for s in variants_frame(summary)["sentence"] if s)
    table = differences_frame(summary)
    head = "".join(f"<th>{escape_html(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape_html(v)}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    level = summary.get("level")
    caption = (f"Variant minus the fine-tuned candidate on the same images and bootstrap resamples "
               f"({escape_html(summary.get('n_boot'))} resamples, seed {escape_html(summary.get('seed'))}"
               + (f", {100 * float(level):.0f}% intervals" if is_number(level) else "") + ").")
    return (f"<section id='mitigation'><h2>Mitigation</h2><ul>{items}</ul><p>{caption}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def mitigation_markdown(summary: Mapping[str, Any]) -> str:
    """The model card's mitigation lines: the sentences and the difference table (escaped Markdown)."""
    lines = ["### Mitigation", ""]
    lines += [f"- {escape_md(s)}" for s in variants_frame(summary)["sentence"] if s]
    table = differences_frame(summary)
    if len(table):
        lines += ["", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(escape_md(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


__all__ = ["DIFFERENCE_COLUMNS", "MITIGATION_CSV", "MITIGATION_DIR", "MITIGATION_SCHEMA_VERSION", "MITIGATION_SUMMARY",
           "OVERALL_ACCURACY_KEY", "REMEDY_LABELS", "MitigationError", "compared_metrics", "describe_row",
           "difference_clause", "differences_frame", "mitigation_dir", "mitigation_html",
           "mitigation_markdown", "points_frame", "read_mitigation", "remedy_sentence", "role_label",
           "run_mitigation_html", "run_mitigation_markdown",
           "tradeoff_frame", "variants_frame"]


def run_mitigation_html(run_folder: str | os.PathLike) -> str:
    """The report's Mitigation section for a run: empty when no remedy was tried, a note when unreadable."""
    try:
        summary = read_mitigation(run_folder)
    except MitigationError as err:
        return f"<section id='mitigation'><h2>Mitigation</h2><p>{escape_html(err)}</p></section>"
    return mitigation_html(summary) if summary is not None else ""


def run_mitigation_markdown(run_folder: str | os.PathLike) -> list[str]:
    """The model card's mitigation lines for a run (none when no remedy was tried)."""
    try:
        summary = read_mitigation(run_folder)
    except MitigationError as err:
        return ["### Mitigation", "", escape_md(err), ""]
    return mitigation_markdown(summary).splitlines() + [""] if summary is not None else []
