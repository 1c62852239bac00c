"""The audit families, composed by :func:`workbench.audit.core.compute_audit` in this order.

Each family is one module that declares its metrics once (name, description, the
direction a policy check uses) and computes their rows from a
:class:`~workbench.audit.context.ModelContext`. The results vocabulary
(``workbench.schema.METRICS``, registered here on import) and the policy's default
directions (``workbench.audit.spec.DEFAULT_DIRECTION``) are read from these declarations.

Adding a family: write ``families/<name>.py`` with ``METRICS`` and a ``FAMILY`` and list it
in :data:`FAMILIES`.
"""

from __future__ import annotations

from workbench import schema
from workbench.audit.families import accuracy, auc, group_prompts, harmful, retrieval, skew
from workbench.audit.families.base import DIRECTIONS, Family, MetricInfo

FAMILIES: tuple[Family, ...] = (
    accuracy.FAMILY, skew.FAMILY, group_prompts.FAMILY, harmful.FAMILY, retrieval.FAMILY, auc.FAMILY
)


def _metric_table(families: tuple[Family, ...]) -> dict[str, MetricInfo]:
    table: dict[str, MetricInfo] = {}
    for family in families:
        for info in family.metrics:
            if info.name in table:
                raise ValueError(f"metric {info.name!r} is declared by two audit families")
            table[info.name] = info
    return table


METRIC_INFO: dict[str, MetricInfo] = _metric_table(FAMILIES)
METRICS: dict[str, str] = {name: info.description for name, info in METRIC_INFO.items()}
DEFAULT_DIRECTION: dict[str, str] = {name: info.direction for name, info in METRIC_INFO.items() if info.direction}
# The results vocabulary every reader of the schema sees (workbench.schema imports nothing of ours).
schema.METRICS.clear()
schema.METRICS.update(METRICS)

__all__ = ["DEFAULT_DIRECTION", "DIRECTIONS", "FAMILIES", "METRICS", "METRIC_INFO", "Family", "MetricInfo"]
