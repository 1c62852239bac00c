"""Fairness audit of CLIP models: metrics, audit definitions, runner and verdicts."""

from workbench.audit.core import AuditResult, ModelEmbeddings, compute_audit
from workbench.audit.runner import run_audit, write_audit
from workbench.audit.spec import AuditSpec, AuditSpecError, load_audit_spec

__all__ = [
    "AuditResult",
    "AuditSpec",
    "AuditSpecError",
    "ModelEmbeddings",
    "compute_audit",
    "load_audit_spec",
    "run_audit",
    "write_audit",
]
