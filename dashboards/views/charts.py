"""Altair chart builders: plain functions from the shared tables to charts, no Streamlit calls.

Sizing: Streamlit's chart theme sets ``autosize: fit`` with ``contains: padding``, so a number
given as a chart's height is the height of the whole drawing (title, axes, legend and plot
together), not of the plot. A fixed number of a few dozen pixels therefore left a plot of about
20 px once rotated axis labels and a title took their share. Charts with one row per category
take their height as a step per row instead (``band_height``): Vega-Lite then drops "fit" for the
height only, draws each row that tall and grows the drawing by what the axes and title need,
while the width still follows the page column.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

ROLE_SCALE = alt.Scale(domain=["base", "tuned"], range=["#8c8c8c", "#1f77b4"])
MIN_PLOT_HEIGHT = 120  # px of plot, whatever the number of rows: three rows of 40 px
SHORT_LABEL_CHARS = 8  # x labels this short stay horizontal; longer ones are slanted
AXIS_LABEL_LIMIT = 220  # px; Streamlit's theme cuts axis labels at 100 px ("basal cell carcino…")
DROP = "drop (CI spans 0)"
REGRESSION = "regression (CI < 0)"


def band_height(rows: int, step: int) -> alt.Step:
    """Height as ``step`` px per category row, raised so the plot is at least MIN_PLOT_HEIGHT tall.

    The step is per row of the y axis even where rows are split by a yOffset (base and tuned
    bars side by side); without "for": "position" a faceted chart took it per sub-bar.
    """
    return alt.Step(max(step, math.ceil(MIN_PLOT_HEIGHT / max(rows, 1))), **{"for": "position"})


def category_x_axis(labels: pd.Series) -> alt.Axis:
    """Horizontal labels when all are short; slanted and right-aligned under their column otherwise.

    Every category keeps its label: Streamlit's theme lets Vega drop labels that would collide,
    which on a category axis leaves columns unnamed.
    """
    longest = int(labels.astype(str).str.len().max()) if len(labels) else 0
    if longest <= SHORT_LABEL_CHARS:
        return alt.Axis(labelAngle=0, labelLimit=AXIS_LABEL_LIMIT, labelOverlap=False)
    return alt.Axis(labelAngle=-45, labelAlign="right", labelBaseline="middle", labelLimit=160, labelOverlap=False)


def category_y_axis() -> alt.Axis:
    """Row labels: all shown, long ones (class names, prompts) up to AXIS_LABEL_LIMIT px."""
    return alt.Axis(labelLimit=AXIS_LABEL_LIMIT, labelOverlap=False)


def title_lines(text: str, max_chars: int | None) -> str | list[str]:
    """``text`` broken at spaces into lines of at most ``max_chars`` characters (a word longer
    than that keeps its own line). Streamlit cuts a chart title at the chart's width less 40 px
    with an ellipsis; charts in a third of the page are 170 to 300 px wide, so their titles wrap."""
    if not max_chars or len(text) <= max_chars:
        return text
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= max_chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def symmetric_limit(values: pd.Series, floor: float = 0.1) -> float:
    """Half-width of a colour domain centred at 0 that holds every finite value (at least ``floor``)."""
    finite = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan).abs().dropna()
    return max(floor, float(finite.max())) if len(finite) else floor


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
    y = alt.Y("label:N", title=None, sort=comparison["label"].tolist(), axis=category_y_axis())
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
        height=band_height(len(comparison), 56))


def delta_bars(comparison: pd.DataFrame) -> alt.Chart:
    """Tuned minus base accuracy per group with its paired interval; red where it falls."""
    frame = comparison.assign(change=np.where(comparison["confirmed"], REGRESSION,
                                              np.where(comparison["regression"], DROP, "gain")))
    y = alt.Y("group:N", title=None, sort=comparison["group"].tolist(), axis=category_y_axis())
    # Below the plot, one entry a line: beside it, in a narrow column, the legend squeezed the
    # bars and cut "regression (interval below 0)" short; the labels are short enough for a
    # column of 200 px.
    color = alt.Color("change:N", title=None, scale=alt.Scale(
        domain=["gain", DROP, REGRESSION],
        range=["#2ca02c", "#ff9896", "#d62728"]), legend=alt.Legend(orient="bottom", direction="vertical",
                                                                  labelLimit=0))
    bars = alt.Chart(frame).mark_bar().encode(
        y=y, x=alt.X("delta:Q", title="tuned − base accuracy", axis=alt.Axis(format="+%", labelSeparation=6)),
        color=color,
        tooltip=["group:N", alt.Tooltip("delta:Q", format="+.1%"), alt.Tooltip("delta_low:Q", format="+.1%"),
                 alt.Tooltip("delta_high:Q", format="+.1%"), "n:Q"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x="delta_low:Q", x2="delta_high:Q")
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color="black", strokeDash=[3, 3]).encode(x="x:Q")
    return alt.layer(bars, whiskers, zero).properties(height=band_height(len(frame), 44))


def single_model_accuracy(frame: pd.DataFrame, min_n: int | None) -> alt.Chart:
    """Per-group accuracy of one model with intervals (used when only one model was audited)."""
    frame = frame.assign(label=frame["group"] + " · " + _n_label(frame, min_n))
    y = alt.Y("label:N", title=None, axis=category_y_axis())
    bars = alt.Chart(frame).mark_bar(color="#8c8c8c").encode(
        y=y, x=alt.X("value:Q", title="zero-shot accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        tooltip=["group:N", alt.Tooltip("value:Q", format=".1%"), "n:Q"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x="ci_low:Q", x2="ci_high:Q")
    return alt.layer(bars, whiskers).properties(height=band_height(len(frame), 40))


def disparity_bars(frame: pd.DataFrame, column: str, min_n: int | None) -> alt.Chart:
    """Difference (or ratio) to the reference group per group, n and a small-group badge on every bar."""
    baseline = 0.0 if column == "difference" else 1.0
    frame = frame.assign(label=frame["group"] + " · " + _n_label(frame, min_n), base=baseline,
                         kind=np.where(frame["is_reference"], "reference", np.where(
                             frame["status"].eq("small_group") | ((frame["n"] < min_n) if min_n else False),
                             "small group", "group")))
    y = alt.Y("label:N", title=None, axis=category_y_axis())
    fmt = "+.1%" if column == "difference" else ".2f"
    title = "accuracy − reference accuracy" if column == "difference" else "accuracy ÷ reference accuracy"
    bars = alt.Chart(frame).mark_bar().encode(
        y=y, x=alt.X(f"{column}:Q", title=title, axis=alt.Axis(format="+%" if column == "difference" else ".2f",
                                                              labelSeparation=6)),
        x2="base:Q",
        # legend below: beside the bars it took half of a column in a 1000 px window
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["group", "small group", "reference"],
                                                            range=["#1f77b4", "#ff7f0e", "#c7c7c7"]),
                        legend=alt.Legend(orient="bottom", direction="vertical")),
        tooltip=["group:N", alt.Tooltip(f"{column}:Q", format=fmt), "n:Q", "status:N"])
    whiskers = alt.Chart(frame).mark_rule(color="black").encode(y=y, x=f"{column}_low:Q", x2=f"{column}_high:Q")
    layers = [bars, whiskers]
    if column == "ratio":
        band = pd.DataFrame({"x": [0.8, 1.25]})
        layers.append(alt.Chart(band).mark_rule(strokeDash=[4, 4], color="#d62728").encode(x="x:Q"))
    return alt.layer(*layers).properties(height=band_height(len(frame), 40))


def skew_heatmap(frame: pd.DataFrame, title: str, diverging_max: float) -> alt.Chart:
    """Prompts x groups, colour = Skew@k on a diverging scale from -diverging_max to +diverging_max.

    The legend is labelled at both ends of the domain (and halfway), so a reader sees where the
    colours stop; with Vega's default round ticks a domain of ±2.81 read as ending at ±2.
    """
    scale = alt.Scale(scheme="redblue", domain=[-diverging_max, diverging_max], reverse=True, clamp=True)
    ticks = [-diverging_max, -diverging_max / 2, 0.0, diverging_max / 2, diverging_max]
    base = alt.Chart(frame, title=title).encode(
        x=alt.X("group:N", title=None, axis=category_x_axis(frame["group"])),
        y=alt.Y("prompt:N", title=None, axis=category_y_axis()))
    cells = base.mark_rect().encode(color=alt.Color("value:Q", scale=scale, title="Skew@k",
                                                    legend=alt.Legend(values=ticks, format="+.2f")),
                                    tooltip=["prompt:N", "group:N", alt.Tooltip("value:Q", format="+.3f"), "n:Q"])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format="+.2f"),
        color=alt.condition(f"abs(datum.value) > {0.6 * diverging_max}", alt.value("white"), alt.value("black")))
    return alt.layer(cells, text).properties(height=band_height(frame["prompt"].nunique(), 28))


def prompt_stat_bars(frame: pd.DataFrame) -> alt.Chart:
    """MaxSkew, MinSkew and NDKL per prompt, base and tuned side by side, with intervals."""
    # A faceted chart keeps its own width (Streamlit cannot stretch it): 3 panels of 170 px, the
    # prompts and the legend fit the main column of a 1280 px window; 220 px panels overflowed it.
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("prompt:N", title=None, axis=category_y_axis()), yOffset="model:N",
        x=alt.X("value:Q", title=None, axis=alt.Axis(tickCount=4)),
        color=alt.Color("model:N", scale=ROLE_SCALE, legend=alt.Legend(orient="bottom")),
        column=alt.Column("metric:N", title=None, sort=["max_skew", "min_skew", "ndkl"]),
        tooltip=["prompt:N", "model:N", "metric:N", alt.Tooltip("value:Q", format="+.3f"),
                 alt.Tooltip("ci_low:Q", format="+.3f"), alt.Tooltip("ci_high:Q", format="+.3f")],
    ).properties(width=170, height=band_height(frame["prompt"].nunique(), 40)).resolve_scale(x="independent")


def spread_over_prompts(frame: pd.DataFrame) -> alt.Chart:
    """MaxSkew of every prompt as a dot per model, with a box for the spread."""
    x = alt.X("value:Q", title="MaxSkew@k over prompts")
    y = alt.Y("model:N", title=None)
    box = alt.Chart(frame).mark_boxplot(extent="min-max", opacity=0.4).encode(
        x=x, y=y, color=alt.Color("model:N", scale=ROLE_SCALE, legend=None))
    dots = alt.Chart(frame).mark_circle(size=70).encode(
        x=x, y=y, color=alt.Color("model:N", scale=ROLE_SCALE, legend=None),
        tooltip=["prompt:N", "model:N", alt.Tooltip("value:Q", format="+.3f")])
    return alt.layer(box, dots).properties(height=band_height(frame["model"].nunique(), 40))


def cell_heatmap(frame: pd.DataFrame, x: str, y: str, value: str, text: str, title: str,
                 percent: bool = True, title_chars: int | None = None) -> alt.Chart:
    """A labelled heatmap; cells whose value is NaN (suppressed) stay grey and show their text.

    A newline in ``text`` starts a second line in the cell ("38.1%" over "n=407"), so the text
    fits a column a quarter as wide as the chart; dark cells get white text. The colour legend
    sits below, so the cells keep the width a legend beside them would take.
    """
    base = alt.Chart(frame, title=title_lines(title, title_chars)).encode(
        x=alt.X(f"{x}:N", title=None, axis=category_x_axis(frame[x])),
        y=alt.Y(f"{y}:N", title=None, axis=category_y_axis()))
    cells = base.mark_rect().encode(
        color=alt.condition(f"isValid(datum['{value}'])",
                            alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues", domain=[0, 1] if percent else None),
                                      title=None, legend=alt.Legend(orient="bottom", gradientLength=120)),
                            alt.value("#e6e6e6")),
        tooltip=[f"{x}:N", f"{y}:N", alt.Tooltip(f"{value}:Q", format=".1%" if percent else "d"), f"{text}:N"])
    labels = base.mark_text(fontSize=11, lineBreak="\n").encode(
        text=f"{text}:N", color=alt.condition(f"datum['{value}'] > 0.6", alt.value("white"), alt.value("black")))
    return alt.layer(cells, labels).properties(height=band_height(frame[y].nunique(), 36))


def count_bars(frame: pd.DataFrame, min_n: int | None) -> alt.Chart:
    """Images per group, the minimum group size as a dashed line."""
    bars = alt.Chart(frame).mark_bar().encode(
        y=alt.Y("group:N", title=None, axis=category_y_axis()), x=alt.X("n:Q", title="images"),
        color=alt.condition(f"datum.n < {min_n or 0}", alt.value("#ff7f0e"), alt.value("#1f77b4")),
        tooltip=["group:N", "n:Q"])
    layers = [bars]
    if min_n:
        layers.append(alt.Chart(pd.DataFrame({"x": [min_n]})).mark_rule(strokeDash=[4, 4], color="#d62728")
                      .encode(x="x:Q"))
    return alt.layer(*layers).properties(height=band_height(len(frame), 32))


def line_over_steps(frame: pd.DataFrame, column: str, title: str, fmt: str = ".3f",
                    title_chars: int | None = None) -> alt.Chart:
    """One training curve. The title names the quantity once: repeated as the y-axis title it ran,
    rotated, taller than the plot and pushed the chart title out of the drawing."""
    return alt.Chart(frame.dropna(subset=[column])).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y(f"{column}:Q", title=None, scale=alt.Scale(zero=False)),
        tooltip=["step:Q", alt.Tooltip(f"{column}:Q", format=fmt)]).properties(
        height=260, title=title_lines(title, title_chars))


def wise_accuracy(frame: pd.DataFrame) -> alt.Chart:
    """Accuracy per split against the interpolation weight alpha."""
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("alpha:Q", title="alpha (0 = base, 1 = fine-tuned)"),
        y=alt.Y("accuracy:Q", title="zero-shot accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
        color=alt.Color("split:N"), tooltip=["alpha:Q", "split:N", alt.Tooltip("accuracy:Q", format=".1%")]
    ).properties(height=240)


def wise_tradeoff(frame: pd.DataFrame, accuracy: str, gap: str) -> alt.Chart:
    """Domain accuracy against the group gap, one point per alpha: up and to the left is better."""
    # Scale padding keeps the alpha printed beside the last point inside the drawing.
    base = alt.Chart(frame).encode(
        x=alt.X(f"{gap}:Q", title="group accuracy gap", axis=alt.Axis(format="%"), scale=alt.Scale(padding=24)),
        y=alt.Y(f"{accuracy}:Q", title="domain accuracy", axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False, padding=16)))
    line = base.mark_line(point=True, color="#1f77b4").encode(order="alpha:Q",
                                                              tooltip=["alpha:Q", f"{accuracy}:Q", f"{gap}:Q"])
    text = base.mark_text(dx=10, dy=-8).encode(text=alt.Text("alpha:Q", format=".2f"))
    return alt.layer(line, text).properties(height=240)
