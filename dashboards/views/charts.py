"""Altair chart builders: plain functions from the shared tables to charts, no Streamlit calls."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

ROLE_SCALE = alt.Scale(domain=["base", "tuned"], range=["#8c8c8c", "#1f77b4"])


def _n_label(frame: pd.DataFrame, min_n: int | None) -> pd.Series:
    small = frame["status"].eq("small_group")
    if min_n:
        small |= frame["n"] < min_n
    return pd.Series(np.where(small, "n=" + frame["n"].astype(str) + " ⚠ small", "n=" + frame["n"].astype(str)),
                     index=frame.index)


def accuracy_dumbbell(comparison: pd.DataFrame, min_n: int | None) -> alt.Chart:
    """Per-group base and tuned accuracy joined by a line, intervals as thin rules, regressions red."""
    comparison = comparison.assign(label=comparison["group"] + " · " + _n_label(comparison, min_n))
    long = []
    for _, r in comparison.iterrows():
        for role in ("base", "tuned"):
            long.append({"group": r["group"], "label": r["label"], "model": role, "accuracy": r[role],
                         "low": r[f"{role}_low"], "high": r[f"{role}_high"], "n": int(r["n"]), "status": r["status"]})
    points = pd.DataFrame(long)
    links = comparison.assign(change=np.where(comparison["regression"], "regression", "gain"))
    links = links[["group", "label", "base", "tuned", "change", "delta"]]
    y = alt.Y("label:N", title=None, sort=comparison["label"].tolist())
    x_scale = alt.Scale(domain=[0, 1])
    link = alt.Chart(links).mark_rule(strokeWidth=4, opacity=0.6).encode(
        y=y, x=alt.X("base:Q", title="zero-shot accuracy", scale=x_scale, axis=alt.Axis(format="%")), x2="tuned:Q",
        color=alt.Color("change:N", scale=alt.Scale(domain=["gain", "regression"], range=["#9ecae1", "#d62728"]),
                        title="change"),
        tooltip=[alt.Tooltip("group:N"), alt.Tooltip("delta:Q", format="+.1%")])
    interval = alt.Chart(points).mark_rule(strokeWidth=1.5).encode(
        y=y, yOffset=alt.YOffset("model:N"), x="low:Q", x2="high:Q",
        color=alt.Color("model:N", scale=ROLE_SCALE, title="model"))
    dots = alt.Chart(points).mark_circle(size=120, opacity=1).encode(
        y=y, yOffset=alt.YOffset("model:N"), x="accuracy:Q", color=alt.Color("model:N", scale=ROLE_SCALE, legend=None),
        tooltip=["group:N", "model:N", alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("low:Q", format=".1%"),
                 alt.Tooltip("high:Q", format=".1%"), "n:Q"])
    return alt.layer(link, interval, dots).resolve_scale(color="independent").properties(
        height=max(120, 60 * len(comparison)))


def delta_bars(comparison: pd.DataFrame) -> alt.Chart:
    """Tuned minus base accuracy per group with its paired interval; red where it falls."""
    frame = comparison.assign(change=np.where(comparison["confirmed"], "regression (interval below 0)",
                                              np.where(comparison["regression"], "drop (interval spans 0)", "gain")))
    y = alt.Y("group:N", title=None, sort=comparison["group"].tolist())
    color = alt.Color("change:N", title=None, scale=alt.Scale(
        domain=["gain", "drop (interval spans 0)", "regression (interval below 0)"],
        range=["#2ca02c", "#ff9896", "#d62728"]))
    bars = alt.Chart(frame).mark_bar().encode(
        y=y, x=alt.X("delta:Q", title="tuned − base accuracy", axis=alt.Axis(format="+%")), color=color,
        tooltip=["group:N", alt.Tooltip("delta:Q", format="+.1%"), alt.Tooltip("delta_low:Q", format="+.1%"),
                 alt.Tooltip("delta_high:Q", format="+.1%"), "n:Q"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x="delta_low:Q", x2="delta_high:Q")
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color="black", strokeDash=[3, 3]).encode(x="x:Q")
    return alt.layer(bars, whiskers, zero).properties(height=max(120, 60 * len(frame)))


def single_model_accuracy(frame: pd.DataFrame, min_n: int | None) -> alt.Chart:
    """Per-group accuracy of one model with intervals (used when only one model was audited)."""
    frame = frame.assign(label=frame["group"] + " · " + _n_label(frame, min_n))
    y = alt.Y("label:N", title=None)
    bars = alt.Chart(frame).mark_bar(color="#8c8c8c").encode(
        y=y, x=alt.X("value:Q", title="zero-shot accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        tooltip=["group:N", alt.Tooltip("value:Q", format=".1%"), "n:Q"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x="ci_low:Q", x2="ci_high:Q")
    return alt.layer(bars, whiskers).properties(height=max(100, 45 * len(frame)))


def disparity_bars(frame: pd.DataFrame, column: str, min_n: int | None) -> alt.Chart:
    """Difference (or ratio) to the reference group per group, n and a small-group badge on every bar."""
    baseline = 0.0 if column == "difference" else 1.0
    frame = frame.assign(label=frame["group"] + " · " + _n_label(frame, min_n), base=baseline,
                         kind=np.where(frame["is_reference"], "reference", np.where(
                             frame["status"].eq("small_group") | ((frame["n"] < min_n) if min_n else False),
                             "small group", "group")))
    y = alt.Y("label:N", title=None)
    fmt = "+.1%" if column == "difference" else ".2f"
    title = "accuracy − reference accuracy" if column == "difference" else "accuracy ÷ reference accuracy"
    bars = alt.Chart(frame).mark_bar().encode(
        y=y, x=alt.X(f"{column}:Q", title=title, axis=alt.Axis(format="+%" if column == "difference" else ".2f")),
        x2="base:Q",
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["group", "small group", "reference"],
                                                            range=["#1f77b4", "#ff7f0e", "#c7c7c7"])),
        tooltip=["group:N", alt.Tooltip(f"{column}:Q", format=fmt), "n:Q", "status:N"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x=f"{column}_low:Q", x2=f"{column}_high:Q")
    layers = [bars, whiskers]
    if column == "ratio":
        band = pd.DataFrame({"x": [0.8, 1.25]})
        layers.append(alt.Chart(band).mark_rule(strokeDash=[4, 4], color="#d62728").encode(x="x:Q"))
    return alt.layer(*layers).properties(height=max(120, 45 * len(frame)))


def skew_heatmap(frame: pd.DataFrame, title: str, diverging_max: float) -> alt.Chart:
    """Prompts x groups, colour = Skew@k on a diverging scale centred at 0, value printed in the cell."""
    scale = alt.Scale(scheme="redblue", domain=[-diverging_max, diverging_max], reverse=True)
    base = alt.Chart(frame, title=title).encode(
        x=alt.X("group:N", title=None),
        y=alt.Y("prompt:N", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=200)))
    cells = base.mark_rect().encode(color=alt.Color("value:Q", scale=scale, title="Skew@k"),
                                    tooltip=["prompt:N", "group:N", alt.Tooltip("value:Q", format="+.3f"), "n:Q"])
    text = base.mark_text(fontSize=11).encode(text=alt.Text("value:Q", format="+.2f"))
    return alt.layer(cells, text).properties(height=max(80, 30 * frame["prompt"].nunique()))


def prompt_stat_bars(frame: pd.DataFrame) -> alt.Chart:
    """MaxSkew, MinSkew and NDKL per prompt, base and tuned side by side, with intervals."""
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("prompt:N", title=None, axis=alt.Axis(labelLimit=220)), yOffset="model:N",
        x=alt.X("value:Q", title=None),
        color=alt.Color("model:N", scale=ROLE_SCALE),
        column=alt.Column("metric:N", title=None, sort=["max_skew", "min_skew", "ndkl"]),
        tooltip=["prompt:N", "model:N", "metric:N", alt.Tooltip("value:Q", format="+.3f"),
                 alt.Tooltip("ci_low:Q", format="+.3f"), alt.Tooltip("ci_high:Q", format="+.3f")],
    ).properties(width=220, height=max(80, 36 * frame["prompt"].nunique())).resolve_scale(x="independent")


def spread_over_prompts(frame: pd.DataFrame) -> alt.Chart:
    """MaxSkew of every prompt as a dot per model, with a box for the spread."""
    x = alt.X("value:Q", title="MaxSkew@k over prompts")
    y = alt.Y("model:N", title=None)
    box = alt.Chart(frame).mark_boxplot(extent="min-max", opacity=0.4).encode(
        x=x, y=y, color=alt.Color("model:N", scale=ROLE_SCALE, legend=None))
    dots = alt.Chart(frame).mark_circle(size=70).encode(
        x=x, y=y, color=alt.Color("model:N", scale=ROLE_SCALE, legend=None),
        tooltip=["prompt:N", "model:N", alt.Tooltip("value:Q", format="+.3f")])
    return alt.layer(box, dots).properties(height=120)


def cell_heatmap(frame: pd.DataFrame, x: str, y: str, value: str, text: str, title: str,
                 percent: bool = True) -> alt.Chart:
    """A labelled heatmap; cells whose value is NaN (suppressed) stay grey and show their text."""
    base = alt.Chart(frame, title=title).encode(x=alt.X(f"{x}:N", title=None), y=alt.Y(f"{y}:N", title=None))
    cells = base.mark_rect().encode(
        color=alt.condition(f"isValid(datum['{value}'])",
                            alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues", domain=[0, 1] if percent else None),
                                      title=None),
                            alt.value("#e6e6e6")),
        tooltip=[f"{x}:N", f"{y}:N", alt.Tooltip(f"{value}:Q", format=".1%" if percent else "d"), f"{text}:N"])
    labels = base.mark_text(fontSize=11).encode(text=f"{text}:N")
    return alt.layer(cells, labels).properties(height=max(80, 32 * frame[y].nunique()))


def count_bars(frame: pd.DataFrame, min_n: int | None) -> alt.Chart:
    """Images per group, the minimum group size as a dashed line."""
    bars = alt.Chart(frame).mark_bar().encode(
        y=alt.Y("group:N", title=None), x=alt.X("n:Q", title="images"),
        color=alt.condition(f"datum.n < {min_n or 0}", alt.value("#ff7f0e"), alt.value("#1f77b4")),
        tooltip=["group:N", "n:Q"])
    layers = [bars]
    if min_n:
        layers.append(alt.Chart(pd.DataFrame({"x": [min_n]})).mark_rule(strokeDash=[4, 4], color="#d62728")
                      .encode(x="x:Q"))
    return alt.layer(*layers).properties(height=max(80, 28 * len(frame)))


def line_over_steps(frame: pd.DataFrame, column: str, title: str, fmt: str = ".3f") -> alt.Chart:
    return alt.Chart(frame.dropna(subset=[column])).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y(f"{column}:Q", title=title, scale=alt.Scale(zero=False)),
        tooltip=["step:Q", alt.Tooltip(f"{column}:Q", format=fmt)]).properties(height=220, title=title)


def wise_accuracy(frame: pd.DataFrame) -> alt.Chart:
    """Accuracy per split against the interpolation weight alpha."""
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("alpha:Q", title="alpha (0 = base, 1 = fine-tuned)"),
        y=alt.Y("accuracy:Q", title="zero-shot accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
        color=alt.Color("split:N"), tooltip=["alpha:Q", "split:N", alt.Tooltip("accuracy:Q", format=".1%")]
    ).properties(height=240)


def wise_tradeoff(frame: pd.DataFrame, accuracy: str, gap: str) -> alt.Chart:
    """Domain accuracy against the group gap, one point per alpha: up and to the left is better."""
    base = alt.Chart(frame).encode(
        x=alt.X(f"{gap}:Q", title="group accuracy gap", axis=alt.Axis(format="%")),
        y=alt.Y(f"{accuracy}:Q", title="domain accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)))
    line = base.mark_line(point=True, color="#1f77b4").encode(order="alpha:Q",
                                                              tooltip=["alpha:Q", f"{accuracy}:Q", f"{gap}:Q"])
    text = base.mark_text(dx=10, dy=-8).encode(text=alt.Text("alpha:Q", format=".2f"))
    return alt.layer(line, text).properties(height=240)
