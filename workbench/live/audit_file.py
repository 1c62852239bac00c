"""Adding a probed prompt to an audit definition file, as data.

The file is read with ``yaml.safe_load``, the prompt appended to ``skew.prompts``, and the
new document written with ``yaml.safe_dump``; before the file is replaced (atomically) the
text about to be written is read back and validated by
:func:`workbench.audit.spec.parse_audit_spec`, so a file the audit would refuse is never
written. ``safe_dump`` keeps the data, not the layout: the comment block at the top of the
file is kept, comments further down are not.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from workbench.audit.spec import AuditSpec, AuditSpecError, parse_audit_spec
from workbench.io import atomic_write_text


class AuditFileError(ValueError):
    """The audit file cannot take the prompt; the message names the file and what to do."""


def _leading_comments(text: str) -> str:
    """The comment lines (and blank lines between them) at the top of a YAML file."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#") or (kept and not line.strip()):
            kept.append(line)
        else:
            break
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def add_skew_prompt(audit_file: str | os.PathLike, prompt: str) -> tuple[AuditSpec, bool]:
    """Append ``prompt`` to ``skew.prompts`` of ``audit_file``; returns (the spec as now on disk, whether it changed).

    A prompt the audit already ranks leaves the file untouched. A file that does not
    validate as it is, or has no ``skew`` section, is refused before anything is written.
    """
    path = Path(audit_file)
    prompt = prompt.strip()
    if not prompt:
        raise AuditFileError(f"{path}: the prompt is empty; type the prompt to add")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuditFileError(f"{path}: audit file not found; give the path of the audit's YAML file") from None
    try:
        data = yaml.safe_load(text)
        current = parse_audit_spec(data, str(path))
    except (yaml.YAMLError, AuditSpecError) as err:
        raise AuditFileError(f"{path}: the file does not validate as it is, so it is left alone: {err}") from err
    if current.skew is None or not isinstance(data.get("skew"), dict):
        raise AuditFileError(f"{path}: no skew section; add one (skew: with prompts and k) before adding prompts to it")
    if prompt in current.skew.prompts:
        return current, False
    skew = data["skew"]
    explicit = skew.get("prompts") or []
    if not isinstance(explicit, list):
        raise AuditFileError(f"{path}: skew.prompts is not a list; fix it by hand before adding prompts")
    skew["prompts"] = [*explicit, prompt]
    new_text = _leading_comments(text) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    try:
        updated = parse_audit_spec(yaml.safe_load(new_text), str(path))
    except AuditSpecError as err:
        raise AuditFileError(f"{path}: adding {prompt!r} would make the audit invalid, so the file is unchanged: {err}") from err
    atomic_write_text(path, new_text)
    return updated, True
