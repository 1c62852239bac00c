"""Selections of the long results table that the dashboard views and the exported report share.

Each function returns a plain DataFrame in one fixed shape, whatever the results hold;
an empty frame (with the same columns) means the audit did not compute that part.

Over 400 lines on purpose: it is a catalogue of small selections, one section per metric
family, kept in one module so the dashboard and the report cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench import schema

SKEW_METRICS = ("skew", "max_skew", "min_skew", "ndkl", "max_skew_mean", "max_skew_std", "ndkl_mean",
                "specific_skew", "specific_max_skew", "control_max_skew_mean", "group_dominance")
PROMPT_SKEW_METRICS = ("max_skew", "min_skew", "ndkl")
ESTIMATE = ["value", "ci_low", "ci_high", "n", "status", "note"]


def _rows(table: pd.DataFrame, **equal: object) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    for col, val in equal.items():
        mask &= table[col] == val
    return table[mask]


def is_intersection(attribute: str) -> bool:
    return "*" in attribute


def attributes(table: pd.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """Attributes with per-group rows: single attributes first (in ``order``, the audit's), then intersections."""
    found = table.loc[(table["attribute"] != "") & (table["group"] != "") & (table["group"] != schema.OVERALL),
                      "attribute"].unique().tolist()
    rank = {a: i for i, a in enumerate(order)}
    return sorted(found, key=lambda a: (is_intersection(a), rank.get(a, len(rank)), a))


def ranking_ks(table: pd.DataFrame) -> list[int]:
    return sorted(int(k) for k in table.loc[table["metric"].isin(SKEW_METRICS) & (table["k"] > 0), "k"].unique())


def ranking_targets(table: pd.DataFrame) -> list[str]:
    found = table.loc[table["metric"].isin(SKEW_METRICS) & (table["target"] != ""), "target"].unique().tolist()
    return sorted(found, key=lambda t: (t != "uniform", t))


def overall_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Whole-set zero-shot accuracy per model role (delta included when present)."""
    rows = table[(table["metric"] == "accuracy") & (table["group"] == schema.OVERALL) & (table["label"] == "")]
    rows = rows.drop_duplicates("model")
    return rows[["model"] + ESTIMATE].reset_index(drop=True)


def group_accuracy(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Per-group accuracy rows of one attribute for every role: model, group, value, interval, n, status."""
    rows = table[(table["metric"] == "accuracy") & (table["attribute"] == attribute) & (table["label"] == "")
                 & (table["group"] != "") & (table["group"] != schema.OVERALL)]
    return rows[["model", "group"] + ESTIMATE].sort_values(["model", "group"]).reset_index(drop=True)


def accuracy_comparison(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """One row per group: base and tuned accuracy with intervals, the paired delta and regression flags.

    ``regression`` is a point estimate below zero; ``confirmed`` additionally has the whole
    delta interval below zero. A delta missing from the results is computed as tuned minus base
    without an interval.
    """
    long = group_accuracy(table, attribute)
    columns = ["group", "n", "status", "note"]
    for role in ("base", "tuned", "delta"):
        columns += [role, f"{role}_low", f"{role}_high"]
    columns += ["regression", "confirmed"]
    groups = sorted(long["group"].unique().tolist())
    out = []
    for group in groups:
        sub = long[long["group"] == group]
        row: dict[str, object] = {"group": group}
        for role in ("base", "tuned", "delta"):
            hit = sub[sub["model"] == role]
            if len(hit):
                r = hit.iloc[0]
                row.update({role: r["value"], f"{role}_low": r["ci_low"], f"{role}_high": r["ci_high"]})
            else:
                row.update({role: math.nan, f"{role}_low": math.nan, f"{role}_high": math.nan})
        if math.isnan(row["delta"]) and not (math.isnan(row["base"]) or math.isnan(row["tuned"])):
            row["delta"] = row["tuned"] - row["base"]
        # n and status are properties of the group's images; the most cautious role speaks for it.
        ref = sub.sort_values("n").iloc[0]
        row.update({"n": int(ref["n"]), "status": _worst_status(sub["status"]), "note": _first_note(sub)})
        row["regression"] = bool(row["delta"] < 0) if not math.isnan(row["delta"]) else False
        row["confirmed"] = bool(row["delta_high"] < 0) if not math.isnan(row["delta_high"]) else False
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def _worst_status(statuses: pd.Series) -> str:
    order = {"not_computed": 0, "small_group": 1, "ok": 2}
    values = statuses.tolist()
    return min(values, key=lambda s: order.get(s, -1)) if values else ""


def _first_note(rows: pd.DataFrame) -> str:
    notes = [n for n in rows["note"].tolist() if n]
    return notes[0] if notes else ""


def audit_reference_group(table: pd.DataFrame, attribute: str, model: str) -> str | None:
    """The group the audit's difference rows are measured against (its difference is exactly 0)."""
    rows = table[(table["metric"] == "accuracy_difference") & (table["attribute"] == attribute)
                 & (table["model"] == model) & (table["label"] == "")]
    zero = rows[(rows["value"] == 0) & (rows["ci_low"].fillna(0) == 0) & (rows["ci_high"].fillna(0) == 0)]
    return str(zero.iloc[0]["group"]) if len(zero) == 1 else None


def disparity(table: pd.DataFrame, attribute: str, model: str, reference: str,
              audit_reference: str | None = None) -> pd.DataFrame:
    """Difference and ratio of each group's accuracy to ``reference``'s, with n and status.

    Intervals come from the audit's bootstrap when its reference group (``audit_reference``, else
    the group whose difference is exactly 0) is ``reference``; for another reference the point
    values are computed from the per-group accuracies.
    """
    acc = group_accuracy(table, attribute)
    acc = acc[acc["model"] == model].set_index("group")
    columns = ["group", "n", "status", "note", "accuracy", "difference", "difference_low", "difference_high",
               "ratio", "ratio_low", "ratio_high", "is_reference", "from_audit"]
    if reference not in acc.index:
        return pd.DataFrame(columns=columns)
    ref_acc = float(acc.loc[reference, "value"])
    from_audit = (audit_reference or audit_reference_group(table, attribute, model)) == reference
    out = []
    for group, r in acc.iterrows():
        row = {"group": group, "n": int(r["n"]), "status": r["status"], "note": r["note"],
               "accuracy": r["value"], "is_reference": group == reference, "from_audit": from_audit}
        for metric, name in (("accuracy_difference", "difference"), ("accuracy_ratio", "ratio")):
            hit = _rows(table, metric=metric, attribute=attribute, model=model, group=group, label="")
            if from_audit and len(hit):
                h = hit.iloc[0]
                row.update({name: h["value"], f"{name}_low": h["ci_low"], f"{name}_high": h["ci_high"]})
            else:
                if name == "difference":
                    value = r["value"] - ref_acc
                else:
                    value = r["value"] / ref_acc if ref_acc > 0 else math.nan
                row.update({name: value, f"{name}_low": math.nan, f"{name}_high": math.nan})
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def attribute_gaps(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """accuracy_gap and accuracy_min_ratio rows of an attribute for every role."""
    rows = table[table["metric"].isin(["accuracy_gap", "accuracy_min_ratio"]) & (table["attribute"] == attribute)
                 & (table["label"] == "")]
    return rows[["model", "metric"] + ESTIMATE].reset_index(drop=True)


def skew_matrix(table: pd.DataFrame, attribute: str, k: int, target: str, metric: str = "skew") -> pd.DataFrame:
    """Skew@k (or ``metric`` "specific_skew") per (model, prompt, group); a delta role is added as
    tuned minus base when absent."""
    rows = _rows(table, metric=metric, attribute=attribute, k=k, target=target)
    rows = rows[(rows["prompt"] != "") & (rows["prompt"] != schema.ALL_PROMPTS)]
    out = rows[["model", "prompt", "group"] + ESTIMATE].reset_index(drop=True)
    roles = set(out["model"])
    if {"base", "tuned"} <= roles and "delta" not in roles:
        wide = out.pivot_table(index=["prompt", "group"], columns="model", values="value", aggfunc="first")
        delta = (wide["tuned"] - wide["base"]).rename("value").reset_index()
        delta["model"] = "delta"
        for col in ("ci_low", "ci_high"):
            delta[col] = math.nan
        delta["n"] = 0
        delta["status"] = "ok"
        delta["note"] = "tuned minus base (no interval in the results)"
        out = pd.concat([out, delta[out.columns]], ignore_index=True)
    return out


def prompt_skew_stats(table: pd.DataFrame, attribute: str, k: int, target: str) -> pd.DataFrame:
    """MaxSkew, MinSkew and NDKL per (model, prompt): one row each with its interval."""
    rows = table[table["metric"].isin(PROMPT_SKEW_METRICS) & (table["attribute"] == attribute)
                 & (table["k"] == k) & (table["target"] == target)
                 & (table["prompt"] != "") & (table["prompt"] != schema.ALL_PROMPTS)]
    return rows[["model", "prompt", "metric"] + ESTIMATE].sort_values(["metric", "model", "prompt"]).reset_index(drop=True)


def skew_aggregates(table: pd.DataFrame, attribute: str, k: int, target: str) -> pd.DataFrame:
    """max_skew_mean / max_skew_std / ndkl_mean over prompts per model."""
    rows = table[table["metric"].isin(["max_skew_mean", "max_skew_std", "ndkl_mean"])
                 & (table["attribute"] == attribute) & (table["k"] == k) & (table["target"] == target)]
    return rows[["model", "metric"] + ESTIMATE].reset_index(drop=True)


def class_accuracy(table: pd.DataFrame, attribute: str, min_n: int | None) -> pd.DataFrame:
    """Per-class recall per group of ``attribute`` (and overall); cells under ``min_n`` suppressed.

    Suppressed cells keep their n and get value NaN and ``suppressed`` True, so a view can show
    the count without a number that a handful of images would make meaningless.
    """
    rows = table[(table["metric"] == "class_accuracy") & (table["label"] != "")
                 & ((table["attribute"] == attribute) | (table["group"] == schema.OVERALL)
                    | ((table["attribute"] == "") & (table["group"] == "")))]
    out = rows[["model", "label", "group"] + ESTIMATE].copy()
    out.loc[out["group"] == "", "group"] = schema.OVERALL
    out = out.drop_duplicates(["model", "label", "group"])
    out["suppressed"] = (out["status"] == "small_group") | (out["n"] < min_n if min_n else False)
    out.loc[out["suppressed"], ["value", "ci_low", "ci_high"]] = np.nan
    return out.sort_values(["model", "group", "label"]).reset_index(drop=True)


def classification_fairness(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Demographic parity and equalized odds differences (one-vs-rest per class) of an attribute."""
    rows = table[table["metric"].isin(["demographic_parity_difference", "equalized_odds_difference"])
                 & (table["attribute"] == attribute)]
    return rows[["model", "metric", "label"] + ESTIMATE].reset_index(drop=True)


def confusion_matrices(predictions: pd.DataFrame, attribute: str, min_n: int | None) -> pd.DataFrame:
    """Counts per (model, group, true label, predicted label) from per-image predictions.

    Groups with fewer than ``min_n`` images are left out (suppressed) rather than shown.
    ``attribute`` may be an intersection "a*b"; its group is the values joined by "*".
    """
    parts = attribute.split("*")
    if any(p not in predictions.columns for p in parts):
        return pd.DataFrame(columns=["model", "group", "label", "predicted", "count", "group_n"])
    frame = predictions.copy()
    frame["group"] = frame[parts].astype(str).agg("*".join, axis=1)
    counts = frame.groupby(["model", "group", "label", "predicted"]).size().rename("count").reset_index()
    sizes = frame.groupby(["model", "group"]).size().rename("group_n").reset_index()
    counts = counts.merge(sizes, on=["model", "group"])
    if min_n:
        counts = counts[counts["group_n"] >= min_n]
    return counts.reset_index(drop=True)


def prompt_skew_comparison(table: pd.DataFrame, attribute: str, k: int, target: str) -> pd.DataFrame:
    """One row per (model, prompt): raw MaxSkew@k beside specific MaxSkew@k (its departure from the
    control prompts), each with its interval and the group it names as over-represented, and n.

    The raw MaxSkew's group is the group with the largest Skew@k for that prompt; the specific
    one is the group column the audit wrote. Columns are NaN / "" where the audit has no row.
    """
    columns = ["model", "prompt", "max_skew", "max_skew_low", "max_skew_high", "max_skew_group",
               "specific", "specific_low", "specific_high", "specific_group", "n"]
    where = (table["attribute"] == attribute) & (table["k"] == k) & (table["target"] == target) \
        & (table["prompt"] != "") & (table["prompt"] != schema.ALL_PROMPTS) & (table["model"] != "delta")
    raw = table[where & (table["metric"] == "max_skew")]
    specific = table[where & (table["metric"] == "specific_max_skew")]
    skews = table[where & (table["metric"] == "skew") & table["value"].notna()]
    keys = sorted(set(zip(raw["model"], raw["prompt"])) | set(zip(specific["model"], specific["prompt"])))
    out = []
    for model, prompt in keys:
        row: dict[str, object] = {"model": model, "prompt": prompt, "max_skew_group": "", "specific_group": ""}
        n = 0
        for name, rows in (("max_skew", raw), ("specific", specific)):
            hit = rows[(rows["model"] == model) & (rows["prompt"] == prompt)]
            if len(hit):
                r = hit.iloc[0]
                row.update({name: r["value"], f"{name}_low": r["ci_low"], f"{name}_high": r["ci_high"]})
                n = max(n, int(r["n"]))
                if name == "specific":
                    row["specific_group"] = r["group"]
            else:
                row.update({name: math.nan, f"{name}_low": math.nan, f"{name}_high": math.nan})
        per_group = skews[(skews["model"] == model) & (skews["prompt"] == prompt)]
        if len(per_group):
            row["max_skew_group"] = per_group.loc[per_group["value"].idxmax(), "group"]
        row["n"] = n
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def group_dominance(table: pd.DataFrame, attribute: str, k: int, target: str) -> pd.DataFrame:
    """Per model: group dominance (how strongly images are ranked by group whatever the prompt) and the
    control panel's mean MaxSkew@k, each with its interval and n."""
    rows = table[table["metric"].isin(["group_dominance", "control_max_skew_mean"])
                 & (table["attribute"] == attribute) & (table["k"] == k) & (table["target"] == target)]
    return rows[["model", "metric"] + ESTIMATE].reset_index(drop=True)


def weat_tests(table: pd.DataFrame, weat_summary: Sequence[dict]) -> pd.DataFrame:
    """Group-prompt (WEAT-style) effect sizes with interval, permutation p-value and Holm-adjusted p.

    ``weat_summary`` is summary.json's "weat_tests" list; its p_holm is matched on model, attribute,
    group pair and prompt (NaN when the summary has none).
    """
    columns = ["model", "attribute", "group", "prompt", "value", "ci_low", "ci_high", "n", "status", "note",
               "p_value", "p_holm", "direction"]
    effects = table[table["metric"] == "weat_effect_size"]
    p_rows = table[table["metric"] == "weat_p_value"].set_index(["model", "attribute", "group", "prompt"])["value"]
    holm = {(str(t.get("model")), str(t.get("attribute")), str(t.get("group")), str(t.get("prompt"))): t.get("p_holm")
            for t in weat_summary if isinstance(t, dict)}
    out = []
    for _, r in effects.iterrows():
        key = (r["model"], r["attribute"], r["group"], r["prompt"])
        p_holm = holm.get(key)
        out.append({**{c: r[c] for c in ["model", "attribute", "group", "prompt"] + ESTIMATE},
                    "p_value": float(p_rows.get(key, math.nan)) if key in p_rows.index else math.nan,
                    "p_holm": float(p_holm) if isinstance(p_holm, (int, float)) else math.nan,
                    "direction": weat_direction(str(r["group"]), float(r["value"]), change=r["model"] == "delta")})
    return pd.DataFrame(out, columns=columns).sort_values(["attribute", "prompt", "group", "model"]).reset_index(drop=True)


def harmful_rates(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Per (model, label, group) share of images whose top label is harmful, with the same model's rate
    over all images beside it; label "" is any harmful label."""
    rows = table[(table["metric"] == "harmful_rate") & (table["attribute"] == attribute)]
    overall = table[(table["metric"] == "harmful_rate") & (table["group"] == schema.OVERALL)]
    overall = overall.drop_duplicates(["model", "label"]).set_index(["model", "label"])["value"]
    out = rows[["model", "label", "group"] + ESTIMATE].copy()
    out["overall"] = [float(overall.get((m, lbl), math.nan)) for m, lbl in zip(out["model"], out["label"])]
    out["direction"] = [harmful_direction(g, v, o, change=m == "delta")
                        for m, g, v, o in zip(out["model"], out["group"], out["value"], out["overall"])]
    return out.sort_values(["label", "group", "model"]).reset_index(drop=True)


def weat_direction(pair: str, effect: float, *, change: bool = False) -> str:
    """'dark images lean to the dark prompt more than light images' for pair 'dark vs light', effect > 0.

    The effect size compares s = cos(image, prompt naming X) - cos(image, prompt naming Y) between
    X's and Y's images, so its sign says whose images lean to the prompt naming their own group.
    A ``change`` (tuned minus base) says whether fine-tuning moved that lean up or down.
    """
    x, _, y = pair.partition(" vs ")
    if not y or math.isnan(effect):
        return ""
    if change:
        return f"after fine-tuning, {x} images lean to the {x} prompt {'more' if effect > 0 else 'less'} than before"
    return f"{x} images lean to the {x} prompt {'more' if effect > 0 else 'less'} than {y} images"


def harmful_direction(group: str, rate: float, overall: float, *, change: bool = False) -> str:
    """'medium above all images (8.1%)': a group's harmful-label rate against the model's rate over all
    images; for a ``change`` row (tuned minus base), whether fine-tuning raised the group's rate."""
    if math.isnan(rate):
        return ""
    if change:
        return f"{group} {'higher' if rate > 0 else 'lower or equal'} after fine-tuning"
    if math.isnan(overall):
        return ""
    return f"{group} {'above' if rate > overall else 'at or below'} all images ({100 * overall:.1f}%)"


# ------------------------------------------------------------------------------------- caption retrieval
RETRIEVAL_DIRECTIONS = ("image_to_text", "text_to_image")
RETRIEVAL_DIRECTION_WORDS = {"image_to_text": "image → text (an image finds its caption)",
                             "text_to_image": "text → image (a caption finds its image)"}
ROLES = ("base", "tuned", "delta")


def retrieval_directions(table: pd.DataFrame) -> list[str]:
    """Directions with Recall@k rows, image to text first."""
    found = set(table.loc[table["metric"] == "retrieval_recall", "label"])
    return [d for d in RETRIEVAL_DIRECTIONS if d in found] + sorted(found - set(RETRIEVAL_DIRECTIONS) - {""})


def retrieval_ks(table: pd.DataFrame) -> list[int]:
    return sorted(int(k) for k in table.loc[(table["metric"] == "retrieval_recall") & (table["k"] > 0), "k"].unique())


def _groups_in_order(rows: pd.DataFrame) -> list[str]:
    """Groups in the order the audit wrote them (its attribute definition's order), overall first."""
    groups = list(dict.fromkeys(rows["group"].tolist()))
    return sorted(groups, key=lambda g: g != schema.OVERALL)


def role_comparison(table: pd.DataFrame, metric: str, attribute: str, label: str = "", k: int = 0,
                    with_overall: bool = False) -> pd.DataFrame:
    """One row per group of ``attribute``: each role's value of ``metric`` with its interval, side by side.

    Columns: group, n, status, note, then base, base_low, base_high, tuned..., delta... (NaN where a role
    has no row). ``with_overall`` puts the whole split's row (group OVERALL) first. n and status are the
    most cautious of the roles' (they describe the group's rows, the same for every model).
    """
    where = (table["metric"] == metric) & (table["label"] == label) & (table["k"] == k)
    scope = (table["attribute"] == attribute) & (table["group"] != "") & (table["group"] != schema.OVERALL)
    if with_overall:
        scope |= (table["attribute"] == "") & (table["group"] == schema.OVERALL)
    rows = table[where & scope]
    columns = ["group", "n", "status", "note"] + [f"{r}{s}" for r in ROLES for s in ("", "_low", "_high")]
    out = []
    for group in _groups_in_order(rows):
        sub = rows[rows["group"] == group]
        row: dict[str, object] = {"group": group}
        for role in ROLES:
            hit = sub[sub["model"] == role]
            r = hit.iloc[0] if len(hit) else None
            row.update({role: r["value"] if r is not None else math.nan,
                        f"{role}_low": r["ci_low"] if r is not None else math.nan,
                        f"{role}_high": r["ci_high"] if r is not None else math.nan})
        real = sub[sub["status"] != "not_computed"]
        ref = (real if len(real) else sub).sort_values("n").iloc[0]
        row.update({"n": int(ref["n"]), "status": _worst_status(sub["status"]), "note": _first_note(sub)})
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def retrieval_recall(table: pd.DataFrame, attribute: str, direction: str, k: int) -> pd.DataFrame:
    """Recall@k of one direction per group (whole split first) for base, fine-tuned and their change,
    beside each group's difference from the reference group per role, with intervals and n.

    Adds ``difference`` columns per role (diff_base, diff_base_low, ...; NaN for the reference group and
    the whole split) and ``regression`` (change below 0) / ``confirmed`` (its interval below 0).
    """
    recall = role_comparison(table, "retrieval_recall", attribute, direction, k, with_overall=True)
    diff = role_comparison(table, "retrieval_recall_difference", attribute, direction, k).set_index("group")
    for role in ROLES:
        for suffix in ("", "_low", "_high"):
            recall[f"diff_{role}{suffix}"] = [float(diff.loc[g, f"{role}{suffix}"]) if g in diff.index else math.nan
                                              for g in recall["group"]]
    recall["regression"] = [bool(v < 0) for v in recall["delta"].fillna(0)]
    recall["confirmed"] = [bool(v < 0) for v in recall["delta_high"].fillna(0)]
    return recall


def retrieval_min_ratio(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Worst-over-best group Recall@k of an attribute per direction and k (rows), per role (columns)."""
    rows = table[(table["metric"] == "retrieval_recall_min_ratio") & (table["attribute"] == attribute)]
    out = []
    for direction in retrieval_directions(table):
        for k in retrieval_ks(table):
            sub = rows[(rows["label"] == direction) & (rows["k"] == k)]
            if sub.empty:
                continue
            row: dict[str, object] = {"direction": direction, "k": k, "n": int(sub["n"].max()),
                                      "status": _worst_status(sub["status"]), "note": _first_note(sub)}
            for role in ROLES:
                hit = sub[sub["model"] == role]
                for suffix, col in (("", "value"), ("_low", "ci_low"), ("_high", "ci_high")):
                    row[f"{role}{suffix}"] = hit.iloc[0][col] if len(hit) else math.nan
            out.append(row)
    return pd.DataFrame(out, columns=["direction", "k", "n", "status", "note"]
                        + [f"{r}{s}" for r in ROLES for s in ("", "_low", "_high")])


# ------------------------------------------------------------------------------------------------- AUC
def auc_classes(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table.loc[(table["metric"] == "auc") & (table["label"] != ""), "label"]))


def auc_by_class(table: pd.DataFrame, attribute: str, model: str) -> tuple[list[str], pd.DataFrame]:
    """Per class (row) of one model: overall AUC, each group's AUC and the attribute's ES-AUC, each with its
    interval and n: the layout of the Harvard-FairVLMed tables.

    Returns (groups in the audit's order, frame). Frame columns: label, n, auc, auc_low, auc_high, then per
    group g "auc:g", "auc:g:low", "auc:g:high", "n:g", "status:g", then es_auc, es_auc_low, es_auc_high,
    es_status, es_note. A cell the audit did not compute (e.g. a group without the class) is NaN.
    """
    mine = table[(table["model"] == model) & (table["label"] != "")]
    overall = mine[(mine["metric"] == "auc") & (mine["group"] == schema.OVERALL)].set_index("label")
    per_group = mine[(mine["metric"] == "auc") & (mine["attribute"] == attribute) & (mine["group"] != "")]
    es = mine[(mine["metric"] == "es_auc") & (mine["attribute"] == attribute)].set_index("label")
    groups = list(dict.fromkeys(table.loc[(table["metric"] == "auc") & (table["attribute"] == attribute)
                                          & (table["group"] != ""), "group"]))
    out = []
    for label in auc_classes(table):
        row: dict[str, object] = {"label": label}
        o = overall.loc[label] if label in overall.index else None
        row.update({"n": int(o["n"]) if o is not None else 0,
                    "auc": o["value"] if o is not None else math.nan,
                    "auc_low": o["ci_low"] if o is not None else math.nan,
                    "auc_high": o["ci_high"] if o is not None else math.nan})
        for g in groups:
            hit = per_group[(per_group["label"] == label) & (per_group["group"] == g)]
            h = hit.iloc[0] if len(hit) else None
            row.update({f"auc:{g}": h["value"] if h is not None else math.nan,
                        f"auc:{g}:low": h["ci_low"] if h is not None else math.nan,
                        f"auc:{g}:high": h["ci_high"] if h is not None else math.nan,
                        f"n:{g}": int(h["n"]) if h is not None else 0,
                        f"status:{g}": h["status"] if h is not None else "not_computed"})
        e = es.loc[label] if label in es.index else None
        row.update({"es_auc": e["value"] if e is not None else math.nan,
                    "es_auc_low": e["ci_low"] if e is not None else math.nan,
                    "es_auc_high": e["ci_high"] if e is not None else math.nan,
                    "es_status": e["status"] if e is not None else "not_computed",
                    "es_note": e["note"] if e is not None else ""})
        out.append(row)
    columns = ["label", "n", "auc", "auc_low", "auc_high"] \
        + [f"{p}:{g}{s}" for g in groups for p, s in (("auc", ""), ("auc", ":low"), ("auc", ":high"), ("n", ""),
                                                      ("status", ""))] \
        + ["es_auc", "es_auc_low", "es_auc_high", "es_status", "es_note"]
    return groups, pd.DataFrame(out, columns=columns)
