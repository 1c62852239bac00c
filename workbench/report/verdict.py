"""The release verdict as every display shows it: the candidate's checks, the reference as context.

One reader for the dashboard's release gate, report.html and model_card.md, so the three say
the same thing. Summaries written under the verdict contract (schema version 2) name the
candidate and the reference and carry the headline, the candidate's checks with their
sentences, the reference's checks and the "fixed" sentences; they are shown as written.
Summaries written before it (schema version 1) hold one check list over every model role and
a verdict that any role could decide. For those the candidate is derived ("tuned" when it was
audited, else the single audited role), its checks are its own rows and the "delta" rows, the
reference's rows become context, and the verdict, headline and sentences are rebuilt from the
checks and the results table, so a base-model failure never reads as the candidate's.

Over 400 lines on purpose: the contract reader and the schema-1 derivation fill the same
CheckView from the same check fields, and keeping them side by side keeps that one shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from workbench import schema
from workbench.report.text import (
    format_change,
    format_estimate,
    is_accuracy_like,
    is_number,
    threshold_text,
)

SEVERITY = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3}  # the audit policy's order of verdicts
KINDS = ("absolute", "regression", "domain", "dominance")
ROLE_WORDS = {"tuned": "fine-tuned", "base": "base", "model": "model", "delta": "fine-tuned − base"}
ROLE_MODEL_PHRASES = {"tuned": "the fine-tuned model", "base": "the base model", "model": "the model"}
# Metrics whose rows are changes of the candidate against the reference (regression and domain checks).
CHANGE_ROLES = ("delta",)


def role_words(role: str) -> str:
    """How a table role reads in a sentence or a column: "fine-tuned" for "tuned"."""
    return ROLE_WORDS.get(role, role)


def model_phrase(role: str, model_id: str) -> str:
    """'the fine-tuned model (runs/x/model)': the model judged, by role and by id."""
    phrase = ROLE_MODEL_PHRASES.get(role, f"model {role}")
    return f"{phrase} ({model_id})" if model_id else phrase


def _number(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(x: Any) -> str:
    return "" if x is None else str(x)


@dataclass(frozen=True)
class CheckView:
    """One policy check as displayed: what it measured, on which model, and the reference beside it."""

    name: str
    kind: str
    role: str                # the results-table role of the judged row: candidate, "delta" or reference
    model: str               # words for the model column: "fine-tuned (runs/x/model)"
    metric: str
    attribute: str
    group: str               # the group named as worse / over-represented, else the row's group
    better_group: str
    direction: str           # "dark below light", "light over-represented", "" when nothing to say
    label: str
    prompt: str
    k: int
    target: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    verdict: str
    reason: str
    thresholds: str
    sentence: str
    reference_value: float | None
    reference_ci_low: float | None
    reference_ci_high: float | None
    reference_verdict: str | None  # the same check judged on the reference, when it was

    @property
    def percent(self) -> bool:
        return is_accuracy_like(self.metric)

    @property
    def is_change(self) -> bool:
        return self.role in CHANGE_ROLES

    @property
    def value_text(self) -> str:
        """'35.0% [10.0, 50.0]', or '+14.0 pp [+9.0, +19.0]' for a change of a share."""
        if self.is_change and self.percent:
            return format_change(self.value, self.ci_low, self.ci_high)
        return format_estimate(self.value, self.ci_low, self.ci_high, percent=self.percent)

    @property
    def reference_text(self) -> str:
        """The reference model's value of the same metric, or '' when there is none."""
        if self.reference_value is None:
            return ""
        return format_estimate(self.reference_value, self.reference_ci_low, self.reference_ci_high,
                               percent=self.percent)

    @property
    def n_text(self) -> str:
        return str(self.n) if self.n else "n/a"

    @property
    def group_text(self) -> str:
        if self.group == schema.OVERALL:
            return "all images"
        return self.group or "all groups"

    @property
    def check_text(self) -> str:
        """The check's name with what else scopes it (label, prompt, k, target)."""
        scope = []
        if self.label:
            scope.append(f"label {self.label}")
        if self.prompt and self.prompt != schema.ALL_PROMPTS:
            scope.append(f"prompt '{self.prompt}'")
        if self.k:
            scope.append(f"k={self.k}")
        if self.target:
            scope.append(f"target {self.target}")
        return self.name + (f" ({', '.join(scope)})" if scope else "")

    @property
    def new_failure(self) -> bool:
        """Fails on the candidate although the reference, judged by the same check, did not fail."""
        return self.verdict == "fail" and self.reference_verdict in ("pass", "warn")

    @property
    def highlighted(self) -> bool:
        """A regression a reviewer must see first: a failing or warning change against the reference,
        or a check the candidate fails that the reference did not."""
        bad = self.verdict in ("fail", "warn")
        return (bad and self.kind in ("regression", "domain")) or self.new_failure

    def row(self) -> list[str]:
        """The row every check table shows: check, model, attribute, group, direction, value [CI], n, status."""
        return [self.check_text, self.model, self.attribute or "all", self.group_text, self.direction or "n/a",
                self.value_text, self.n_text, self.verdict]


ROW_HEADER = ["check", "model", "attribute", "group", "direction", "value [CI]", "n", "status"]


@dataclass(frozen=True)
class Verdict:
    """The candidate's verdict with its checks first; the reference's checks are context only."""

    candidate: str
    candidate_id: str
    reference: str | None
    reference_id: str
    verdict: str
    headline: str
    checks: tuple[CheckView, ...]
    reference_checks: tuple[CheckView, ...]
    fixed: tuple[str, ...]
    derived: bool  # True when read from a summary written before the verdict contract

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(1 for c in self.checks if c.verdict == v) for v in schema.VERDICTS}

    @property
    def headline_body(self) -> str:
        """The headline without its leading 'FAIL:' (for displays that show the verdict as a badge)."""
        prefix = f"{self.verdict.upper()}:"
        return self.headline[len(prefix):].strip() if self.headline.upper().startswith(prefix) else self.headline

    @property
    def reference_words(self) -> str:
        return role_words(self.reference) if self.reference else ""

    def ordered_checks(self) -> list[CheckView]:
        """Worst verdict first; within a verdict the highlighted regressions first; else the policy's order."""
        order = sorted(enumerate(self.checks), key=lambda ic: (-SEVERITY.get(ic[1].verdict, 1),
                                                               not ic[1].highlighted, ic[0]))
        return [c for _, c in order]


# --- reading -----------------------------------------------------------------------------------


def _model_ids(summary: Mapping[str, Any]) -> dict[str, str]:
    models = summary.get("models") or {}
    return {str(role): _text(entry.get("model")) for role, entry in models.items() if isinstance(entry, dict)}


def _roles(summary: Mapping[str, Any], table: pd.DataFrame | None) -> list[str]:
    roles = list(_model_ids(summary))
    if table is not None and "model" in table.columns:
        roles += [r for r in table["model"].unique().tolist() if r not in roles]
    return [r for r in roles if r not in CHANGE_ROLES]


def _candidate_and_reference(summary: Mapping[str, Any], table: pd.DataFrame | None) -> tuple[str, str | None]:
    if summary.get("candidate"):
        reference = summary.get("reference")
        return str(summary["candidate"]), (str(reference) if reference else None)
    roles = _roles(summary, table)
    if "tuned" in roles:
        return "tuned", ("base" if "base" in roles else None)
    if len(roles) == 1:
        return roles[0], None
    # Several roles, none called "tuned": without a contract summary the candidate is unknowable;
    # the last role audited is the closest guess (the runner audits the base first).
    return (roles[-1] if roles else "model"), None


def _check_roles(check: Mapping[str, Any]) -> set[str]:
    # A check that matched no row records the roles it asked for, joined by commas.
    return {r for r in _text(check.get("model")).split(",") if r}


def _rows(table: pd.DataFrame | None, **equal: object) -> pd.DataFrame:
    if table is None or table.empty:
        return pd.DataFrame(columns=list(schema.RESULT_COLUMNS))
    mask = pd.Series(True, index=table.index)
    for col, val in equal.items():
        mask &= table[col] == val
    return table[mask]


def _table_row(table: pd.DataFrame | None, role: str, check: Mapping[str, Any]) -> pd.DataFrame:
    """The results row of ``role`` that ``check`` selects (same metric, attribute, group, label, prompt, k, target)."""
    return _rows(table, model=role, metric=_text(check.get("metric")), attribute=_text(check.get("attribute")),
                 group=_text(check.get("group")), label=_text(check.get("label")), prompt=_text(check.get("prompt")),
                 k=int(_number(check.get("k")) or 0), target=_text(check.get("target")))


def _reference_group(summary: Mapping[str, Any], attribute: str) -> str:
    entry = (summary.get("groups") or {}).get(attribute)
    return _text(entry.get("reference")) if isinstance(entry, dict) else ""


def derive_direction(check: Mapping[str, Any], role: str, table: pd.DataFrame | None,
                     summary: Mapping[str, Any], candidate: str) -> tuple[str, str, str]:
    """(worse or over-represented group, its comparison group, direction in words) of a check,
    read from the results table when the summary predates the contract; ('', '', '') when the
    metric names no group. For a change row (role "delta") the groups are the candidate's."""
    is_change = role in CHANGE_ROLES
    if is_change:
        role = candidate
    metric = _text(check.get("metric"))
    attribute = _text(check.get("attribute"))
    group = _text(check.get("group"))
    value = _number(check.get("value"))
    where = {k: check.get(k) for k in ("prompt", "k", "target") if check.get(k) not in (None, "", 0)}
    if metric in ("accuracy_gap", "accuracy_min_ratio") and attribute:
        rows = _rows(table, metric="accuracy", model=role, attribute=attribute, label="")
        rows = rows[(rows["group"] != "") & (rows["group"] != schema.OVERALL) & rows["value"].notna()]
        if len(rows) >= 2:
            worse = rows.loc[rows["value"].idxmin(), "group"]
            better = rows.loc[rows["value"].idxmax(), "group"]
            return str(worse), str(better), f"{worse} below {better}"
        return "", "", ""
    if metric in ("accuracy_difference", "accuracy_ratio") and group and value is not None:
        reference = _reference_group(summary, attribute)
        neutral = 0.0 if metric == "accuracy_difference" else 1.0
        if not reference or group == reference:
            return group, reference, ""
        below = value < neutral
        return (group, reference, f"{group} below {reference}") if below else (reference, group,
                                                                                 f"{group} above {reference}")
    if metric == "accuracy" and is_change and value is not None:
        who = "all images" if group in ("", schema.OVERALL) else group
        return group, "", f"{who} {'lower' if value < 0 else 'higher'} after fine-tuning"
    if metric in ("max_skew", "min_skew") and attribute:
        rows = _rows(table, metric="skew", model=role, attribute=attribute, **where)
        rows = rows[rows["value"].notna()]
        if len(rows):
            if metric == "max_skew":
                g = rows.loc[rows["value"].idxmax(), "group"]
                return str(g), "", f"{g} over-represented"
            g = rows.loc[rows["value"].idxmin(), "group"]
            return str(g), "", f"{g} under-represented"
        return "", "", ""
    if metric == "specific_max_skew" and group:
        return group, "", f"{group} over-represented"
    if metric in ("skew", "specific_skew") and group and value is not None:
        return group, "", f"{group} {'over' if value > 0 else 'under'}-represented"
    if metric == "max_skew_mean":
        return "", "", "most over-represented group, mean over prompts"
    if metric == "group_dominance":
        return "", "", f"images ranked by {attribute or 'group'} whatever the prompt"
    if metric == "harmful_rate" and group and value is not None:
        overall = _rows(table, metric="harmful_rate", model=role, group=schema.OVERALL,
                        label=_text(check.get("label")))
        if len(overall) and is_number(overall.iloc[0]["value"]):
            above = value > float(overall.iloc[0]["value"])
            return group, "", f"{group} {'above' if above else 'at or below'} the overall rate"
    return "", "", ""


def infer_kind(check: Mapping[str, Any], roles: set[str]) -> str:
    """The contract's check kind, for summaries that do not record it."""
    if check.get("kind") in KINDS:
        return str(check["kind"])
    metric = _text(check.get("metric"))
    if metric == "group_dominance":
        return "dominance"
    if roles & set(CHANGE_ROLES):
        if metric == "accuracy" and _text(check.get("group")) in ("", schema.OVERALL):
            return "domain"
        return "regression"
    return "absolute"


def _key(check: Mapping[str, Any]) -> tuple:
    return tuple(_text(check.get(k)) for k in ("name", "attribute", "group", "label", "prompt", "k", "target"))


def _derived_sentence(view: CheckView, candidate: str, model_id: str, reference: str | None) -> str:
    """A sentence naming model, attribute, group, direction, value, interval and n, for a summary that
    predates the contract (which writes its own)."""
    if view.role in CHANGE_ROLES:
        subject = (f"after fine-tuning, {model_phrase(candidate, model_id)} against the "
                   f"{role_words(reference or 'base')}")
    else:
        subject = model_phrase(view.role, model_id)
    head = f"{subject}: {view.metric}" + (f" of {view.attribute}" if view.attribute else "")
    if view.direction:
        head += f", {view.direction}"
    elif view.group:
        head += f", group {view.group_text}"
    value = view.value_text + (f", n={view.n}" if view.n else "")
    return f"{head}: {value} ({view.verdict}; {view.thresholds})"


def _view(check: Mapping[str, Any], *, candidate: str, reference: str | None, ids: Mapping[str, str],
          table: pd.DataFrame | None, summary: Mapping[str, Any],
          reference_verdicts: Mapping[tuple, str]) -> CheckView:
    roles = _check_roles(check)
    kind = infer_kind(check, roles)
    role = next(iter(roles)) if len(roles) == 1 else (candidate if candidate in roles else _text(check.get("model")))
    judged = candidate if role in CHANGE_ROLES else role
    model_id = _text(check.get("model_id")) or ids.get(judged, "")
    model = role_words(judged) + (f" ({model_id})" if model_id else "")
    if role in CHANGE_ROLES:
        model += f" vs {role_words(reference or 'base')}"
    if "direction_text" in check or "worse_group" in check:
        worse, better, direction = (_text(check.get("worse_group")), _text(check.get("better_group")),
                                    _text(check.get("direction_text")))
    else:
        worse, better, direction = derive_direction(check, role, table, summary, candidate)
    group = worse or _text(check.get("group"))
    ref_value = _number(check.get("reference_value"))
    ref_low, ref_high = _number(check.get("reference_ci_low")), _number(check.get("reference_ci_high"))
    if ref_value is None and "reference_value" not in check and reference:
        # Before the contract the reference's row of the same metric sits in the results table.
        hit = _table_row(table, reference, check)
        if len(hit):
            ref_value, ref_low, ref_high = (_number(hit.iloc[0][c]) for c in ("value", "ci_low", "ci_high"))
    n = _number(check.get("n"))
    if n is None:
        # Summaries before the contract may leave n out; the judged row of the table has it.
        hit = _table_row(table, role, check)
        n = _number(hit.iloc[0]["n"]) if len(hit) else None
    view = CheckView(
        name=_text(check.get("name")), kind=kind, role=role, model=model, metric=_text(check.get("metric")),
        attribute=_text(check.get("attribute")), group=group, better_group=better, direction=direction,
        label=_text(check.get("label")), prompt=_text(check.get("prompt")), k=int(_number(check.get("k")) or 0),
        target=_text(check.get("target")), value=_number(check.get("value")), ci_low=_number(check.get("ci_low")),
        ci_high=_number(check.get("ci_high")), n=int(n) if n else None,
        verdict=_text(check.get("verdict")) or "inconclusive", reason=_text(check.get("reason")),
        thresholds=threshold_text(dict(check)), sentence="", reference_value=ref_value,
        reference_ci_low=ref_low, reference_ci_high=ref_high, reference_verdict=reference_verdicts.get(_key(check)))
    sentence = _text(check.get("sentence")) or _derived_sentence(view, candidate, model_id, reference)
    return replace(view, sentence=sentence)


def _derived_headline(candidate: str, candidate_id: str, reference: str | None, verdict: str,
                      checks: Sequence[CheckView], reference_checks: Sequence[CheckView]) -> str:
    subject = model_phrase(candidate, candidate_id)
    total = len(checks)
    if not total:
        return f"INCONCLUSIVE: {subject} has no policy check to be judged by."
    by = {v: [c for c in checks if c.verdict == v] for v in schema.VERDICTS}
    if verdict == "pass":
        text = f"PASS: {subject} passes all {total} checks"
        ref_failed = [c for c in reference_checks if c.verdict == "fail"]
        if reference and ref_failed:
            text += f"; the {role_words(reference)} failed {len(ref_failed)} of them"
        return text + "."
    if verdict == "fail":
        named = by["fail"]
        return f"FAIL: {subject} fails {len(named)} of {total} checks: " + "; ".join(c.sentence for c in named) + "."
    if verdict == "warn":
        named = by["warn"]
        return (f"WARN: {subject} fails no check but {len(named)} of {total} warn: "
                + "; ".join(c.sentence for c in named) + ".")
    named = by["inconclusive"]
    return (f"INCONCLUSIVE: {len(named)} of {total} checks of {subject} cannot be decided from these data: "
            + "; ".join(c.sentence for c in named) + ".")


def read_verdict(summary: Mapping[str, Any], table: pd.DataFrame | None = None) -> Verdict:
    """The verdict of an audit summary (with its results table, used for summaries written before
    the verdict contract to name groups and the reference's values)."""
    candidate, reference = _candidate_and_reference(summary, table)
    ids = _model_ids(summary)
    contract = "candidate" in summary
    all_checks = [c for c in summary.get("checks") or [] if isinstance(c, dict)]
    if contract:
        mine = all_checks
        theirs = [c for c in summary.get("reference_checks") or [] if isinstance(c, dict)]
    else:
        wanted = {candidate} | (set(CHANGE_ROLES) if reference else set())
        mine = [c for c in all_checks if _check_roles(c) & wanted]
        theirs = [c for c in all_checks if reference and _check_roles(c) == {reference}]
    common = dict(candidate=candidate, reference=reference, ids=ids, table=table, summary=summary)
    reference_checks = tuple(_view(c, reference_verdicts={}, **common) for c in theirs)
    reference_verdicts = {_key(c): _text(c.get("verdict")) for c in theirs}
    checks = tuple(_view(c, reference_verdicts=reference_verdicts, **common) for c in mine)
    if contract and summary.get("verdict") in SEVERITY:
        verdict = str(summary["verdict"])
    else:
        verdict = max((c.verdict for c in checks), key=lambda v: SEVERITY.get(v, 1)) if checks else "inconclusive"
    if contract and summary.get("fixed") is not None:
        fixed = tuple(_text(s) for s in summary.get("fixed") or [])
    else:
        by_key = {_key(src): view for src, view in zip(mine, checks)}
        fixed_list = []
        for src, ref in zip(theirs, reference_checks):
            mine_view = by_key.get(_key(src))
            if ref.verdict == "fail" and mine_view is not None and mine_view.verdict == "pass":
                fixed_list.append(f"{ref.check_text}: {model_phrase(reference or '', ids.get(reference or '', ''))} "
                                  f"failed ({ref.value_text}); {model_phrase(candidate, ids.get(candidate, ''))} "
                                  f"passes ({mine_view.value_text})")
        fixed = tuple(fixed_list)
    headline = _text(summary.get("headline")) if contract else ""
    if not headline:
        headline = _derived_headline(candidate, ids.get(candidate, ""), reference, verdict, checks, reference_checks)
    return Verdict(candidate=candidate, candidate_id=ids.get(candidate, ""), reference=reference,
                   reference_id=ids.get(reference, "") if reference else "", verdict=verdict, headline=headline,
                   checks=checks, reference_checks=reference_checks, fixed=fixed, derived=not contract)

