"""Live questions to an audited run's models, asked from the dashboard on demand.

The dashboard never loads a model to draw a page; this package is the one place it may
import (lazily, inside the handler of a button) to load a run's towers when a reviewer asks:

- :mod:`workbench.live.session`: an audit folder opened with its models, data table and cached
  image embeddings, checked against the fingerprints the audit recorded;
- :mod:`workbench.live.probe`: a typed prompt's top-k images and skew rows, computed by the
  audit's own code on the audit's own image embeddings (only the text tower runs);
- :mod:`workbench.live.heatmap`: occlusion heat maps (where in an image the model finds a prompt);
- :mod:`workbench.live.audit_file`: adding a probed prompt to an audit definition file.
"""

from workbench.live.audit_file import AuditFileError, add_skew_prompt
from workbench.live.heatmap import (
    HEATMAP_METHOD,
    HeatmapCache,
    cell_bounds,
    group_mean_maps,
    heatmap_for_row,
    occlusion_maps,
    render_heatmap,
)
from workbench.live.probe import ProbeResult, probe_prompt
from workbench.live.session import LiveAudit, LiveError, open_live_audit, spec_from_summary

__all__ = [
    "HEATMAP_METHOD",
    "AuditFileError",
    "HeatmapCache",
    "LiveAudit",
    "LiveError",
    "ProbeResult",
    "add_skew_prompt",
    "cell_bounds",
    "group_mean_maps",
    "heatmap_for_row",
    "occlusion_maps",
    "open_live_audit",
    "probe_prompt",
    "render_heatmap",
    "spec_from_summary",
]
