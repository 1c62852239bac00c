"""Reading what an AppTest page shows: chart data sets, view switching."""

from __future__ import annotations

import pyarrow as pa


def chart_frames(at, index: int | None = None):
    """The data sets of the Altair charts on the page, decoded from their Arrow payloads."""
    charts = at.get("vega_lite_chart")
    chosen = charts if index is None else [charts[index]]
    frames = []
    for chart in chosen:
        frames.append([pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets])
    return frames


def show(at, view: str):
    at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_with(at, *columns: str, within=None):
    """The first st.dataframe on the page (or inside the block ``within``) holding all ``columns``."""
    frames = (within.get("dataframe") if within is not None else at.dataframe)
    for frame in frames:
        if all(c in frame.value.columns for c in columns):
            return frame.value
    raise AssertionError(f"no table with columns {columns}; tables: {[list(f.value.columns) for f in frames]}")
