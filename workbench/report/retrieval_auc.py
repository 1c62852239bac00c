"""Caption retrieval and AUC tables as the reviewer reads them: the dashboard and the HTML report show
the very same strings, built here from workbench.report.tables.

Every cell names its number's model (column header), attribute and direction (columns) and group (row
or header), with its interval and n.
"""

from __future__ import annotations

import pandas as pd

from workbench import schema
from workbench.report import tables
from workbench.report.text import format_change, format_estimate, is_number

# Short: they head columns of wide tables; the sections' text says that a change is fine-tuned minus base.
ROLE_WORDS = {"base": "base", "tuned": "fine-tuned", "delta": "change"}


def format_signed(value: object, low: object = None, high: object = None, digits: int = 3) -> str:
    """'+0.012 [-0.004, +0.030]': a change of a non-share (AUC, ratio, rank) with its interval."""
    if not is_number(value):
        return "n/a"
    text = f"{float(value):+.{digits}f}"
    if is_number(low) and is_number(high):
        text += f" [{float(low):+.{digits}f}, {float(high):+.{digits}f}]"
    return text


def _roles(frame: pd.DataFrame) -> list[str]:
    return [r for r in tables.ROLES if r in frame.columns and frame[r].notna().any()]


def group_label(group: str) -> str:
    return "all query pairs" if group == schema.OVERALL else group


def recall_reference(recall: pd.DataFrame) -> str | None:
    """The group whose difference the audit did not report: the one the others are measured against."""
    no_diff = [g for g, d, t in zip(recall["group"], recall["diff_base"], recall["diff_tuned"])
               if g != schema.OVERALL and not (is_number(d) or is_number(t))]
    return no_diff[0] if len(no_diff) == 1 else None


def recall_table(table: pd.DataFrame, attribute: str, direction: str, k: int) -> pd.DataFrame:
    """Recall@k per group for each model with intervals, the change, and each model's difference from
    the reference group; the whole split first. Empty when the audit has no such rows.

    The attribute, direction and k head the table where it is shown (they are the same on every row).
    """
    recall = tables.retrieval_recall(table, attribute, direction, k)
    if recall.empty:
        return pd.DataFrame()
    reference = recall_reference(recall)
    roles = _roles(recall)
    out = pd.DataFrame({"group": [group_label(g) for g in recall["group"]], "n": recall["n"]})
    for role in roles:
        fmt = format_change if role == "delta" else (lambda v, lo, hi: format_estimate(v, lo, hi, percent=True))
        out[f"{ROLE_WORDS[role]} Recall@{k} [CI]"] = [fmt(v, lo, hi) for v, lo, hi in
                                                       zip(recall[role], recall[f"{role}_low"], recall[f"{role}_high"])]
    for role in [r for r in roles if r != "delta"]:
        header = f"{ROLE_WORDS[role]}: group − {reference or 'reference group'} [CI]"
        out[header] = ["reference" if g == reference else
                       ("" if g == schema.OVERALL else format_change(v, lo, hi))
                       for g, v, lo, hi in zip(recall["group"], recall[f"diff_{role}"], recall[f"diff_{role}_low"],
                                               recall[f"diff_{role}_high"])]
    out["status"] = recall["status"].tolist()
    return out


def min_ratio_table(table: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Worst-over-best group Recall@k per direction and k for each model, with intervals and n."""
    ratio = tables.retrieval_min_ratio(table, attribute)
    if ratio.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"attribute": attribute, "direction": ratio["direction"], "k": ratio["k"], "n": ratio["n"]})
    for role in _roles(ratio):
        fmt = format_signed if role == "delta" else format_estimate
        out[f"{ROLE_WORDS[role]} worst/best [CI]"] = [fmt(v, lo, hi) for v, lo, hi in
                                                       zip(ratio[role], ratio[f"{role}_low"], ratio[f"{role}_high"])]
    out["status"] = ratio["status"].tolist()
    return out


def mean_rank_table(table: pd.DataFrame, attribute: str, direction: str) -> pd.DataFrame:
    """Mean rank of the match per group for each model (1 = always first; lower is better)."""
    rank = tables.role_comparison(table, "retrieval_mean_rank", attribute, direction, 0, with_overall=True)
    if rank.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"attribute": attribute, "direction": direction, "group": [group_label(g) for g in rank["group"]],
                        "n": rank["n"]})
    for role in _roles(rank):
        fmt = (lambda v, lo, hi: format_signed(v, lo, hi, digits=1)) if role == "delta" \
            else (lambda v, lo, hi: format_estimate(v, lo, hi, digits=1))
        out[f"{ROLE_WORDS[role]} mean rank [CI]"] = [fmt(v, lo, hi) for v, lo, hi in
                                                      zip(rank[role], rank[f"{role}_low"], rank[f"{role}_high"])]
    out["status"] = rank["status"].tolist()
    return out


def auc_table(table: pd.DataFrame, attribute: str, roles: list[str]) -> pd.DataFrame:
    """Per model and class: AUC over all images, each group's AUC and the attribute's ES-AUC, with intervals;
    group columns are headed with the group's n, ES-AUC first, as in the Harvard-FairVLMed tables. The attribute heads
    the ES-AUC column and the table where it is shown."""
    parts = []
    for role in roles + (["delta"] if "delta" in set(table["model"]) else []):
        groups, frame = tables.auc_by_class(table, attribute, role)
        if frame.empty or frame["auc"].isna().all():
            continue
        fmt = format_signed if role == "delta" else format_estimate
        # ES-AUC first, then the AUCs it summarises: the order of the Harvard-FairVLMed tables.
        out = pd.DataFrame({"model": ROLE_WORDS.get(role, role), "class": frame["label"],
                            "n": frame["n"],
                            f"ES-AUC over {attribute} [CI]": [fmt(v, lo, hi) for v, lo, hi in
                                                             zip(frame["es_auc"], frame["es_auc_low"],
                                                                 frame["es_auc_high"])],
                            "AUC, all images [CI]": [fmt(v, lo, hi) for v, lo, hi in
                                                     zip(frame["auc"], frame["auc_low"], frame["auc_high"])]})
        for g in groups:
            n = int(frame[f"n:{g}"].max())
            out[f"AUC {g} (n={n}) [CI]"] = [fmt(v, lo, hi) + (" ⚠ small group" if s == "small_group" else "")
                                            if is_number(v) else "n/a" for v, lo, hi, s in
                                            zip(frame[f"auc:{g}"], frame[f"auc:{g}:low"], frame[f"auc:{g}:high"],
                                                frame[f"status:{g}"])]
        out["status"] = frame["es_status"].tolist()
        parts.append(out)
    if not parts:
        return pd.DataFrame()
    # Roles can differ in their groups only if the audit skipped one; align columns, absent cells 'n/a'.
    return pd.concat(parts, ignore_index=True).fillna("n/a")


def has_retrieval(table: pd.DataFrame) -> bool:
    return bool(((table["metric"] == "retrieval_recall") & (table["status"] != "not_computed")).any())


def has_auc(table: pd.DataFrame) -> bool:
    return bool(((table["metric"] == "auc") & (table["status"] != "not_computed")).any())


def skipped_reasons(table: pd.DataFrame, metrics: tuple[str, ...]) -> list[str]:
    """Why the audit did not compute a family at all (its whole-split not_computed notes), deduplicated."""
    rows = table[table["metric"].isin(metrics) & (table["status"] == "not_computed")
                 & (table["attribute"] == "") & (table["label"] == "")]
    return list(dict.fromkeys(str(n) for n in rows["note"] if n))
