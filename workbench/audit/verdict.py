"""The verdict in words: one sentence per check, and a headline a reviewer can repeat.

Every check entry (``summary["checks"]`` for the candidate, ``summary["reference_checks"]``
for the reference) gets the model it judges, the group named as worse (accuracy) or
over-represented (skew) and its comparison group, a direction ("dark below light"), the
reference's value of the same row, and a sentence with value, interval and n. The headline
names the candidate and each failing check; a candidate that passes where the reference
failed says what was fixed.

Over 400 lines on purpose: one wording function per metric family, side by side, so every
sentence follows the same pattern (who, direction, size, interval, n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbench import schema
from workbench.audit.context import ROW_KEY
from workbench.audit.families import METRIC_INFO
from workbench.audit.policy import Judgement
from workbench.audit.spec import DELTA_ROLE

ROLE_NAMES = {"tuned": "the fine-tuned model", "base": "the base model", "model": "the model"}
_HEADLINE_ITEMS = 4  # failing checks named in the headline before "and N more"
_IDENTITY = ("metric", "attribute", "group", "label", "prompt", "k", "target")


@dataclass
class VerdictText:
    headline: str
    fixed: list[str]  # sentences: checks the reference failed and the candidate passes


def model_text(role: str, model_id: str = "") -> str:
    """"the fine-tuned model (runs/x/model)" for role "tuned"; "model 'x' (id)" for other role names."""
    name = ROLE_NAMES.get(role, f"model {role!r}")
    return f"{name} ({model_id})" if model_id else name


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * abs(x):.1f} points"


def _num(x: float) -> str:
    return f"{x:.2f}"


def _ci(entry: Mapping[str, Any], share: bool, label: str = "CI") -> str:
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if low is None or high is None:
        return "no interval"
    scale = 100.0 if share else 1.0
    digits = 1 if share else 2
    return f"{label} {scale * low:.{digits}f} to {scale * high:.{digits}f}"


def _who(group: str, attribute: str) -> str:
    return f"{group} ({attribute})" if attribute else group


class _Rows:
    """The results table indexed by row identity, for the sentences' look-ups."""

    def __init__(self, results: pd.DataFrame, candidate: str, reference: str | None):
        self.records = results.to_dict("records")
        self.by_key = {tuple(r[c] for c in ROW_KEY): r for r in self.records}
        self.candidate = candidate
        self.reference = reference

    def groups(self, model: str, metric: str, attribute: str, **where: Any) -> list[dict[str, Any]]:
        """Rows of one metric per group of an attribute (computed ones only)."""
        out = []
        for r in self.records:
            if r["model"] == model and r["metric"] == metric and r["attribute"] == attribute and r["group"] not in ("", schema.OVERALL):
                if r["status"] != "not_computed" and all(r[c] == v for c, v in where.items()):
                    out.append(r)
        return out

    def same_row(self, entry: Mapping[str, Any], model: str) -> dict[str, Any] | None:
        """``model``'s row of the same identity (ignoring the group where it only names who attains the value)."""
        info = METRIC_INFO.get(entry["metric"])
        if info is not None and info.group_attains:
            for r in self.records:
                if r["model"] == model and all(r[c] == entry[c] for c in _IDENTITY if c != "group"):
                    return r
            return None
        return self.by_key.get((model, *(entry[c] for c in _IDENTITY)))


def _extremes(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(lowest, highest) row by value; None with fewer than two groups."""
    rows = [r for r in rows if not math.isnan(r["value"])]
    if len(rows) < 2:
        return None
    ordered = sorted(rows, key=lambda r: r["value"])
    return ordered[0], ordered[-1]


@dataclass
class _Words:
    phrase: str
    worse: str = ""
    better: str = ""
    direction: str = ""


def _accuracy_words(e: Mapping[str, Any], rows: _Rows, model: str, delta: bool) -> _Words:
    metric, attr, value = e["metric"], e["attribute"], e["value"]
    if metric == "accuracy" and e["group"] == schema.OVERALL:
        if delta:
            verb = "rose" if value > 0 else "fell" if value < 0 else "did not change"
            ref = rows.same_row(e, rows.reference)
            span = f" from {_pct(ref['value'])} to {_pct(ref['value'] + value)}" if ref else ""
            return _Words(f"zero-shot accuracy {verb}{span} ({'+' if value >= 0 else '-'}{_pts(value)}, "
                          f"{_ci(e, True)}, n={e['n']})", direction=verb)
        return _Words(f"overall zero-shot accuracy is {_pct(value)} ({_ci(e, True)}, n={e['n']})")
    if metric in ("accuracy_gap", "accuracy_min_ratio"):
        ends = _extremes(rows.groups(model, "accuracy", attr))
        worse, better = (ends[0]["group"], ends[1]["group"]) if ends else ("", "")
        sizes = f"n={ends[0]['n']} vs {ends[1]['n']}" if ends else f"n={e['n']}"
        direction = f"{worse} below {better}" if ends else ""
        if delta:
            ref = rows.same_row(e, rows.reference)
            verb = "grew" if value > 0 else "shrank" if value < 0 else "did not change"
            name = "accuracy gap" if metric == "accuracy_gap" else "accuracy ratio (lowest over highest group)"
            span = f" from {_fmt(metric, ref['value'])} to {_fmt(metric, ref['value'] + value)}" if ref else ""
            return _Words(f"the {attr} {name} {verb}{span} ({_ci(e, metric == 'accuracy_gap', 'change CI')}); "
                          f"{worse} is below {better}", worse, better, direction)
        if metric == "accuracy_gap":
            return _Words(f"{_who(worse, attr)} is {_pts(value)} below {better} in accuracy ({_ci(e, True)}, {sizes})",
                          worse, better, direction)
        return _Words(f"{_who(worse, attr)} accuracy is {value:.2f}x {better}'s ({_ci(e, False)}, {sizes})",
                      worse, better, direction)
    if metric in ("accuracy_difference", "accuracy_ratio"):
        reference_group = _reference_group(rows, model, attr)
        g = e["group"]
        below = value < 0 if metric == "accuracy_difference" else value < 1
        worse, better = (g, reference_group) if below else (reference_group, g)
        if metric == "accuracy_difference":
            words = f"{_who(g, attr)} is {_pts(value)} {'below' if below else 'above'} {reference_group} in accuracy"
            return _Words(f"{words} ({_ci(e, True)}, n={e['n']})", worse, better, f"{worse} below {better}")
        return _Words(f"{_who(g, attr)} accuracy is {value:.2f}x {reference_group}'s ({_ci(e, False)}, n={e['n']})",
                      worse, better, f"{worse} below {better}")
    if metric == "accuracy":
        return _Words(f"accuracy of {_who(e['group'], attr)} is {_pct(value)} ({_ci(e, True)}, n={e['n']})")
    if metric == "class_accuracy":
        return _Words(f"recall of {e['label']!r} for {_who(e['group'], attr) if attr else 'all images'} is {_pct(value)} "
                      f"({_ci(e, True)}, n={e['n']})")
    name = "selection rates" if metric == "demographic_parity_difference" else "true/false positive rates"
    return _Words(f"for class {e['label']!r}, {name} differ by up to {_pts(value)} across {attr} groups "
                  f"({_ci(e, True)}, n={e['n']})")


def _skew_words(e: Mapping[str, Any], rows: _Rows, model: str, delta: bool) -> _Words:
    metric, attr, value, k, target = e["metric"], e["attribute"], e["value"], e["k"], e["target"]
    label = {"max_skew": f"MaxSkew@{k}", "specific_max_skew": f"specific MaxSkew@{k}", "skew": f"Skew@{k}",
             "specific_skew": f"specific Skew@{k}"}.get(metric, f"{metric}@{k}")
    if metric == "group_dominance":
        n = int(e["n"])
        count = int(round(value * n))
        lead = f", most often {e['group']}" if e["group"] else ""
        if delta:
            return _Words(f"the share of unrelated control prompts that put a {attr} group significantly ahead in the "
                          f"top {k} changed by {'+' if value >= 0 else '-'}{_pts(value)} ({_ci(e, True, 'change CI')})",
                          e["group"], "", f"{e['group']} ahead on unrelated prompts" if e["group"] else "")
        if count == 0:
            return _Words(f"no unrelated control prompt of {n} puts a {attr} group significantly ahead in the top {k} "
                          f"({_ci(e, True)}): rankings do not follow {attr} by themselves")
        prefix = f"ranks images by {attr} whatever the prompt: " if value >= e.get("warn_threshold", 1.0) else ""
        return _Words(f"{prefix}{count} of {n} unrelated control prompts ({_pct(value)}, {_ci(e, True)}) put a {attr} "
                      f"group significantly ahead in the top {k}{lead}", e["group"], "",
                      f"{e['group']} ahead on unrelated prompts" if e["group"] else "")
    if e["prompt"] in (schema.ALL_PROMPTS, schema.CONTROL_PANEL):
        which = "neutral prompts" if e["prompt"] == schema.ALL_PROMPTS else "unrelated control prompts"
        what = {"max_skew_mean": f"mean MaxSkew@{k}", "max_skew_std": f"spread of MaxSkew@{k}", "ndkl_mean": f"mean NDKL@{k}",
                "control_max_skew_mean": f"mean MaxSkew@{k}"}.get(metric, metric)
        if delta:
            return _Words(f"{what} of {which} over {attr} changed by {value:+.2f} ({_ci(e, False, 'change CI')})")
        return _Words(f"{which} reach {what} {_num(value)} over {attr} ({_ci(e, False)})")
    specific = metric in ("specific_skew", "specific_max_skew")
    skews = rows.groups(model, "specific_skew" if specific else "skew", attr, prompt=e["prompt"], k=k, target=target)
    ends = _extremes(skews)
    if metric in ("skew", "specific_skew"):
        g = e["group"]
        side = "over" if value > 0 else "under"
        words = f"'{e['prompt']}' puts {_who(g, attr)} images {side}-represented in its top {k} ({label} {_num(value)}, "
        if delta:
            return _Words(f"{label} of {_who(g, attr)} for '{e['prompt']}' changed by {value:+.2f} "
                          f"({_ci(e, False, 'change CI')})", g if value > 0 else "", "", f"{g} {side}-represented")
        return _Words(words + f"{_ci(e, False)}, n={e['n']})", g if value > 0 else "", "", f"{g} {side}-represented")
    # max_skew, specific_max_skew, min_skew, ndkl: name who is ahead of whom, and by how much. The
    # factor is exp(skew difference): the ratio of the two groups' top-k shares, each over its target
    # share (and, for specific skew, over its share in the control prompts' rankings).
    worse = e["group"] or (ends[1]["group"] if ends else "")
    ahead = next((r for r in skews if r["group"] == worse), None)
    behind = min((r for r in skews if r["group"] != worse and not math.isnan(r["value"])), key=lambda r: r["value"],
                 default=None)
    better = behind["group"] if behind is not None else ""
    ratio = counted = ""
    if ahead is not None and behind is not None:
        factor = math.exp(ahead["value"] - behind["value"])
        relative = [w for w, on in (("their shares of the data", target == "data"), ("the control prompts", specific)) if on]
        relative_text = f", relative to {' and '.join(relative)}," if relative else ""
        ratio = f"returns {_who(worse, attr)} images {factor:.1f}x as often as {better}{relative_text} in its top {k} "
        counts = _top_k_counts(rows, model, attr, e["prompt"], k, target)
        if worse in counts and better in counts:
            # The factor is a ratio of ratios and reads large when a group nearly vanishes from the
            # top k: the plain counts let a reviewer see what it rests on.
            counted = f"{worse} {counts[worse]}, {better} {counts[better]} of the {k}"
            typical = _control_counts(rows, model, attr, e["prompt"], k, target) if specific else {}
            if worse in typical and better in typical:
                counted += f"; a typical control prompt: {worse} {typical[worse]:.0f}, {better} {typical[better]:.0f}"
    direction = f"{worse} over-represented" if worse else ""
    sizes = f", n={ahead['n']} vs {behind['n']}" if ahead is not None and behind is not None else ""
    if delta:
        ref = rows.same_row(e, rows.reference)
        span = f" from {_num(ref['value'])} to {_num(ref['value'] + value)}" if ref else f" by {value:+.2f}"
        now = f"{ratio}({counted})" if counted else ratio.strip()
        return _Words(f"{label} of '{e['prompt']}' went{span} ({_ci(e, False, 'change CI')}); it {now or 'ranks as before'}",
                      worse, better, direction)
    counted = f"{counted}; " if counted else ""
    return _Words(f"'{e['prompt']}' {ratio}({counted}{label} {_num(value)}, {_ci(e, False)}{sizes})", worse, better,
                  direction)


def _skew_rows(rows: _Rows, model: str, metric: str, attribute: str, prompt: str, k: int,
               target: str) -> dict[str, dict[str, Any]]:
    """One prompt's computed Skew@k-family rows by group."""
    return {str(r["group"]): r for r in rows.groups(model, metric, attribute, prompt=prompt, k=k, target=target)
            if not math.isnan(r["value"])}


def _count_at_zero_skew(skews: Mapping[str, Mapping[str, Any]], k: int, target: str) -> dict[str, float]:
    """k p*: each group's top-k count where its Skew@k is 0; p* is 1 / groups for the uniform
    target and the group's share of the rows for the data target (``target_distribution``)."""
    total = sum(int(r["n"]) for r in skews.values())
    return {g: k * (1.0 / len(skews) if target == "uniform" else int(r["n"]) / total) for g, r in skews.items()}


def _top_k_counts(rows: _Rows, model: str, attribute: str, prompt: str, k: int, target: str) -> dict[str, int]:
    """Images of each group among a prompt's top k, read back from its Skew@k rows.

    Skew@k = ln((c / k) / p*) with an absent group counted as c = 1, so c = k p* exp(Skew@k),
    rounded; a row noted absent is 0. Empty when a group's row is missing.
    """
    skews = _skew_rows(rows, model, "skew", attribute, prompt, k, target)
    scale = _count_at_zero_skew(skews, k, target)
    out = {g: 0 if "absent" in str(r.get("note") or "") else int(round(scale[g] * math.exp(r["value"])))
           for g, r in skews.items()}
    return out if sum(out.values()) == k else {}  # a group's row missing: no counts rather than wrong ones


def _control_counts(rows: _Rows, model: str, attribute: str, prompt: str, k: int, target: str) -> dict[str, float]:
    """Images of each group in a typical control prompt's top k: k p* exp(mean control Skew@k).

    The mean control skew is the prompt's Skew@k minus its specific Skew@k (point values), so
    this is the geometric mean over the control prompts of each group's count (an absent group
    counted as one image), the count the specific skew compares against. Empty when rows are missing.
    """
    skews = _skew_rows(rows, model, "skew", attribute, prompt, k, target)
    specific = _skew_rows(rows, model, "specific_skew", attribute, prompt, k, target)
    if not skews or set(skews) != set(specific):
        return {}
    scale = _count_at_zero_skew(skews, k, target)
    return {g: scale[g] * math.exp(r["value"] - specific[g]["value"]) for g, r in skews.items()}


def _other_words(e: Mapping[str, Any], rows: _Rows, model: str, delta: bool) -> _Words:
    metric, attr, value = e["metric"], e["attribute"], e["value"]
    if metric == "harmful_rate":
        what = "a harmful label" if not e["label"] else repr(e["label"])
        who = "all" if e["group"] in ("", schema.OVERALL) else _who(e["group"], attr)
        if delta:
            return _Words(f"the share of {who} images labelled {what} changed by {'+' if value >= 0 else '-'}{_pts(value)} "
                          f"({_ci(e, True, 'change CI')})", e["group"] if value > 0 else "")
        return _Words(f"{_pct(value)} of {who} images are labelled {what} ({_ci(e, True)}, n={e['n']})", e["group"])
    if metric == "group_prompt_preference":
        return _Words(f"{_pct(value)} of {_who(e['group'], attr)} images sit closest to the prompt naming their own group "
                      f"in '{e['prompt']}' ({_ci(e, True)}, n={e['n']})")
    if metric == "weat_effect_size":
        return _Words(f"'{e['prompt']}': {e['group']} ({attr}) WEAT effect size {_num(value)} ({_ci(e, False)}, n={e['n']})")
    if metric.startswith("retrieval_"):
        return _retrieval_words(e, rows, model, delta)
    if metric in ("auc", "es_auc"):
        what = f"AUC of class {e['label']!r}" if metric == "auc" else f"equity-scaled AUC of class {e['label']!r} over {attr}"
        who = "" if metric == "es_auc" or e["group"] in ("", schema.OVERALL) else f" among {_who(e['group'], attr)} images"
        if delta:
            return _Words(f"{what}{who} changed by {value:+.3f} ({_ci(e, False, 'change CI')})")
        return _Words(f"{what}{who} is {value:.3f} ({_ci(e, False)}, n={e['n']})")
    where = ", ".join(f"{c} {e[c]}" for c in ("attribute", "group", "label", "prompt", "k", "target") if e[c] not in ("", 0))
    return _Words(f"{metric}{' (' + where + ')' if where else ''} {'changed by ' if delta else 'is '}{value:.3g} "
                  f"({_ci(e, False)}, n={e['n']})")


def _retrieval_words(e: Mapping[str, Any], rows: _Rows, model: str, delta: bool) -> _Words:
    """Caption retrieval: the label holds the direction (image_to_text / text_to_image)."""
    metric, attr, value, k = e["metric"], e["attribute"], e["value"], e["k"]
    task = f"{e['label'].replace('_', '-')} Recall@{k}"
    if metric == "retrieval_recall_min_ratio":
        ends = _extremes(rows.groups(model, "retrieval_recall", attr, label=e["label"], k=k))
        worse, better = (ends[0]["group"], ends[1]["group"]) if ends else ("", "")
        sizes = f"n={ends[0]['n']} vs {ends[1]['n']}" if ends else f"n={e['n']}"
        direction = f"{worse} below {better}" if ends else ""
        if delta:
            return _Words(f"the {attr} {task} ratio (lowest over highest group) changed by {value:+.2f} "
                          f"({_ci(e, False, 'change CI')}); {worse} is below {better}", worse, better, direction)
        return _Words(f"{task} of {_who(worse, attr)} queries is {value:.2f}x {better}'s ({_ci(e, False)}, {sizes})",
                      worse, better, direction)
    if metric == "retrieval_recall_difference":
        reference_group = _reference_group(rows, model, attr)
        below = value < 0
        worse, better = (e["group"], reference_group) if below else (reference_group, e["group"])
        if delta:
            return _Words(f"{task} of {_who(e['group'], attr)} relative to {reference_group} changed by "
                          f"{'+' if value >= 0 else '-'}{_pts(value)} ({_ci(e, True, 'change CI')})", worse, better)
        return _Words(f"{task} of {_who(e['group'], attr)} is {_pts(value)} {'below' if below else 'above'} "
                      f"{reference_group} ({_ci(e, True)}, n={e['n']})", worse, better, f"{worse} below {better}")
    who = "all" if e["group"] in ("", schema.OVERALL) else _who(e["group"], attr)
    if metric == "retrieval_mean_rank":
        what = f"{e['label'].replace('_', '-')} mean rank of {who} queries"
        if delta:
            return _Words(f"{what} changed by {value:+.1f} ({_ci(e, False, 'change CI')})")
        return _Words(f"{what} is {value:.1f} ({_ci(e, False)}, n={e['n']})")
    if delta:
        return _Words(f"{task} of {who} queries changed by {'+' if value >= 0 else '-'}{_pts(value)} "
                      f"({_ci(e, True, 'change CI')})")
    return _Words(f"{task} of {who} queries is {_pct(value)} ({_ci(e, True)}, n={e['n']})")


# Shares whose value is a difference of two shares: printed in points, not percent.
_POINTS = ("accuracy_difference", "accuracy_gap", "demographic_parity_difference", "equalized_odds_difference",
           "retrieval_recall_difference")


def _fmt(metric: str, value: float) -> str:
    info = METRIC_INFO.get(metric)
    if info is None or info.unit != "share":
        return _num(value)
    return f"{100 * value:.1f} points" if metric in _POINTS else _pct(value)


def _reference_group(rows: _Rows, model: str, attribute: str) -> str:
    """The attribute's reference group: the one group without an accuracy_difference row."""
    with_difference = {r["group"] for r in rows.groups(model, "accuracy_difference", attribute)}
    others = [r["group"] for r in rows.groups(model, "accuracy", attribute) if r["group"] not in with_difference]
    return others[0] if len(others) == 1 else "the reference group"


def _words(e: Mapping[str, Any], rows: _Rows) -> _Words:
    if e["value"] is None:
        return _Words(f"{e['name']} could not be computed ({e['reason']})")
    delta = e["model"] == DELTA_ROLE
    model = rows.candidate if delta else e["model"]
    if e["metric"] in ("accuracy", "accuracy_difference", "accuracy_ratio", "accuracy_gap", "accuracy_min_ratio",
                       "class_accuracy", "demographic_parity_difference", "equalized_odds_difference"):
        return _accuracy_words(e, rows, model, delta)
    if "skew" in e["metric"] or e["metric"] in ("ndkl", "ndkl_mean", "group_dominance"):
        return _skew_words(e, rows, model, delta)
    return _other_words(e, rows, model, delta)


def describe_verdict(judgement: Judgement, results: pd.DataFrame, *, candidate: str, reference: str | None,
                     model_ids: Mapping[str, str]) -> VerdictText:
    """Add the words to every check entry of ``judgement`` (in place); return the headline and fixes."""
    rows = _Rows(results, candidate, reference)
    tuned_pair = (candidate, reference) == ("tuned", "base")
    change = "after fine-tuning, " if tuned_pair else (
        f"compared with {model_text(reference, model_ids.get(reference, ''))}, " if reference else "")
    phrases: dict[int, str] = {}
    for e in judgement.checks:
        words = _words(e, rows)
        judged = candidate if e["model"] == DELTA_ROLE else e["model"]
        prefix = change if (reference is not None and e["model"] in (candidate, DELTA_ROLE)) else ""
        phrase = prefix + words.phrase
        ref_row = rows.same_row(e, reference) if reference is not None and e["value"] is not None else None
        if ref_row is not None and e["model"] == candidate and ref_row["status"] != "not_computed":
            phrase = phrase[:-1] + f"; was {_fmt(e['metric'], ref_row['value'])})" if phrase.endswith(")") else phrase
        _fill(e, words, model_ids.get(judged, ""), judged, phrase, ref_row)
        phrases[id(e)] = phrase
    for e in judgement.reference_checks:
        words = _words(e, rows)
        _fill(e, words, model_ids.get(e["model"], ""), e["model"], words.phrase, None)
        phrases[id(e)] = words.phrase
    fixed = _fixed(judgement, phrases, candidate, reference)
    headline = _headline(judgement, phrases, [short for _, short in fixed], candidate, reference, model_ids)
    return VerdictText(headline, [sentence for sentence, _ in fixed])


def _fill(e: dict[str, Any], words: _Words, model_id: str, role: str, phrase: str, ref_row: Mapping[str, Any] | None) -> None:
    e["model_id"] = model_id
    e["worse_group"] = words.worse
    e["better_group"] = words.better
    e["direction_text"] = words.direction
    who = model_text(role, model_id)
    e["sentence"] = f"{who[0].upper()}{who[1:]}: {phrase}."
    ok = ref_row is not None and ref_row["status"] != "not_computed"
    e["reference_value"] = _finite(ref_row["value"]) if ok else None
    e["reference_ci_low"] = _finite(ref_row["ci_low"]) if ok else None
    e["reference_ci_high"] = _finite(ref_row["ci_high"]) if ok else None


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _same_check(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    info = METRIC_INFO.get(a["metric"])
    columns = [c for c in _IDENTITY if not (c == "group" and info is not None and info.group_attains)]
    return a["name"] == b["name"] and all(a[c] == b[c] for c in columns)


def _fixed(judgement: Judgement, phrases: Mapping[int, str], candidate: str,
           reference: str | None) -> list[tuple[str, str]]:
    """(sentence, short form) for each check the reference failed and the candidate passes."""
    out = []
    for ref in judgement.reference_checks:
        if ref["verdict"] != "fail" or ref["model"] != reference:
            continue
        mine = next((c for c in judgement.checks if c["model"] == candidate and _same_check(c, ref)), None)
        if mine is not None and mine["verdict"] == "pass":
            sentence = (f"{ref['name']}: {phrases[id(ref)]} in {model_text(reference)}; "
                        f"{_fmt(mine['metric'], mine['value'])} ({_ci(mine, _unit_share(mine))}) in {model_text(candidate)}")
            short = ref["name"]
            if ref["prompt"] and ref["prompt"] not in (schema.ALL_PROMPTS, schema.CONTROL_PANEL):
                short += f" for '{ref['prompt']}'"
            if ref["direction_text"]:
                short += f", {ref['direction_text']}"
            out.append((sentence, short))
    return out


def _unit_share(e: Mapping[str, Any]) -> bool:
    info = METRIC_INFO.get(e["metric"])
    return info is not None and info.unit == "share"


def _listing(items: list[str]) -> str:
    shown = items[:_HEADLINE_ITEMS]
    more = f"; and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "; ".join(shown) + more


def _headline(judgement: Judgement, phrases: Mapping[int, str], fixed: list[str], candidate: str, reference: str | None,
              model_ids: Mapping[str, str]) -> str:
    who = model_text(candidate, model_ids.get(candidate, ""))
    checks = judgement.checks
    if not checks:
        return f"INCONCLUSIVE: the audit has no policy checks that apply to {who}."
    by = {v: [c for c in checks if c["verdict"] == v] for v in schema.VERDICTS}
    n = len(checks)
    if judgement.verdict == "fail":
        extra = f" ({len(by['warn'])} more warn)" if by["warn"] else ""
        return f"FAIL: {who} fails {len(by['fail'])} of {n} checks{extra}: {_listing([phrases[id(c)] for c in by['fail']])}."
    if judgement.verdict == "warn":
        return (f"WARN: {who} passes {len(by['pass'])} of {n} checks; {len(by['warn'])} warn: "
                f"{_listing([phrases[id(c)] for c in by['warn']])}.")
    if judgement.verdict == "inconclusive":
        undecided = [f"{c['name']} ({c['reason']})" for c in by["inconclusive"]]
        return (f"INCONCLUSIVE: {who} passes {len(by['pass'])} of {n} checks; {len(undecided)} cannot be decided: "
                f"{_listing(undecided)}.")
    text = f"PASS: {who} passes all {n} checks"
    failed_before = [c for c in judgement.reference_checks if c["verdict"] == "fail" and c["model"] == reference]
    if reference is not None and failed_before:
        text += f"; {model_text(reference)} failed {len(failed_before)} of them"
        if fixed:
            text += f" (fixed: {_listing(fixed)})"
    return text + "."
