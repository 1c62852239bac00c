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
