"""Audit definitions: ``audits/*.yaml`` parsed into an :class:`AuditSpec`.

The file is data (``yaml.safe_load``), never code. The schema is strict: an unknown key
or a value of the wrong type is an error that names the file and the key path, so a
typo never silently drops a check. Defaults are filled in here, in one place, and the
parsed spec (``AuditSpec.to_dict()``) is written into every summary.

The file is longer than most on purpose: the dataclasses and the strict reader of each
section sit together, so a key's type, default and error message are read in one place.

Problems that do not make the file unreadable (a duplicated prompt, a class left without
prompts) are collected in ``AuditSpec.warnings``; the runner reports them and marks the
affected metrics as not computed instead of stopping the whole audit.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import schema
from workbench.audit.controls import DEFAULT_CONTROL_PROMPTS
from workbench.audit.families import DEFAULT_DIRECTION, DIRECTIONS, METRICS
from workbench.prompts import fill_template

TARGETS = ("uniform", "data")
DEFAULT_TARGETS = ("uniform",)
DEFAULT_MIN_GROUP_SIZE = 30  # a smaller group is flagged and cannot make a check pass
# What a policy check judges (derived from its fields, never written in the file):
#   absolute   -- a value of the candidate model (the default);
#   regression -- candidate minus reference on the same resamples (``models: [delta]`` or ``regression: true``);
#   domain     -- the regression of overall zero-shot accuracy: fine-tuning must raise it;
#   dominance  -- the model's group dominance (metric ``group_dominance``).
CHECK_KINDS = ("absolute", "regression", "domain", "dominance")
DELTA_ROLE = "delta"
DOMAIN_CHECK_NAME = "domain_accuracy_gain"

__all__ = ["DEFAULT_DIRECTION", "DIRECTIONS", "TARGETS", "AuditSpec", "AuditSpecError", "load_audit_spec", "parse_audit_spec"]


class AuditSpecError(ValueError):
    """The audit definition cannot be used as written; the message names the file and key."""


@dataclass(frozen=True)
class AttributeSpec:
    column: str
    groups: tuple[str, ...] | None = None  # expected values; None = whatever the data holds
    reference: str | None = None  # None = the largest group in the data


@dataclass(frozen=True)
class ClassSpec:
    labels: tuple[str, ...] | None  # None = the labels found in the data
    templates: tuple[str, ...]
    wording: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def prompts_for(self, label: str) -> tuple[str, ...]:
        """Prompts that describe ``label``: explicit ones, else every template filled with its wording."""
        if label in self.prompts:
            return self.prompts[label]
        word = self.wording.get(label, label)
        return tuple(fill_template(t, word) for t in self.templates)


@dataclass(frozen=True)
class SkewSpec:
    prompts: tuple[str, ...]  # explicit prompts plus templates x concepts, duplicates removed
    k: tuple[int, ...]
    targets: tuple[str, ...] = DEFAULT_TARGETS
    # Control prompts (workbench/audit/controls.py): the model's skew baseline for specific skew
    # and group dominance. Never one of ``prompts``.
    controls: tuple[str, ...] = DEFAULT_CONTROL_PROMPTS


@dataclass(frozen=True)
class GroupPromptSpec:
    attribute: str
    template: str  # with {group} and {concept}
    concepts: tuple[str, ...]
    terms: dict[str, str] = field(default_factory=dict)  # group value -> wording in the prompt
    reference: str | None = None  # WEAT pairs are (group, reference); None = attribute's reference

    def prompt(self, group: str, concept: str) -> str:
        return self.template.replace("{group}", self.terms.get(group, group)).replace("{concept}", concept)


@dataclass(frozen=True)
class HarmfulSpec:
    labels: tuple[str, ...]
    templates: tuple[str, ...] | None = None  # None = the class templates

    def prompts_for(self, label: str, class_templates: tuple[str, ...]) -> tuple[str, ...]:
        templates = self.templates if self.templates is not None else class_templates
        return tuple(fill_template(t, label) for t in (templates or ("{}",)))


@dataclass(frozen=True)
class CheckSpec:
    metric: str
    warn: float
    fail: float
    direction: str
    name: str
    models: tuple[str, ...] | None = None  # None = the candidate (and, as context, the reference); ("delta",) = regression
    attribute: str | None = None
    group: str | None = None
    label: str | None = None
    prompt: str | None = None
    k: int | None = None
    target: str | None = None
    kind: str = "absolute"  # one of CHECK_KINDS, derived from the fields above

    @property
    def on_delta(self) -> bool:
        """Judged on the candidate-minus-reference rows (regression and domain checks)."""
        return self.kind in ("regression", "domain")


def check_kind(metric: str, group: str | None, on_delta: bool) -> str:
    """The kind of a check from its fields (see :data:`CHECK_KINDS`)."""
    if on_delta:
        return "domain" if metric == "accuracy" and group == schema.OVERALL else "regression"
    return "dominance" if metric == "group_dominance" else "absolute"


def domain_check() -> CheckSpec:
    """The check added whenever a reference exists (``policy.domain_check``): fine-tuning must
    raise overall zero-shot accuracy. It passes when the paired interval of the gain lies above 0,
    warns when accuracy fell without significance, fails when it fell significantly."""
    return CheckSpec(metric="accuracy", warn=0.0, fail=0.0, direction="lower_is_worse", name=DOMAIN_CHECK_NAME,
                     models=(DELTA_ROLE,), group=schema.OVERALL, kind="domain")


@dataclass(frozen=True)
class PolicySpec:
    alpha: float = 0.05
    checks: tuple[CheckSpec, ...] = ()
    domain_check: bool = True  # add domain_check() when the audit has a reference model


@dataclass(frozen=True)
class BootstrapSpec:
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    n_perm: int = 5000


@dataclass(frozen=True)
class AuditSpec:
    name: str
    attributes: tuple[AttributeSpec, ...]
    intersections: tuple[tuple[str, ...], ...] = ()
    description: str = ""
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    classes: ClassSpec | None = None
    skew: SkewSpec | None = None
    group_prompts: tuple[GroupPromptSpec, ...] = ()
    harmful: HarmfulSpec | None = None
    policy: PolicySpec = PolicySpec()
    bootstrap: BootstrapSpec = BootstrapSpec()
    source: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def group_columns(self) -> tuple[str, ...]:
        return tuple(a.column for a in self.attributes)

    def attribute(self, column: str) -> AttributeSpec:
        for a in self.attributes:
            if a.column == column:
                return a
        raise KeyError(column)

    def to_dict(self) -> dict[str, Any]:
        """The parsed definition with defaults filled in (JSON-ready)."""
        out = asdict(self)
        out.pop("warnings")
        return out


# ---------------------------------------------------------------------------------------
# strict reading


class _Reader:
    def __init__(self, source: str):
        self.source = source
        self.warnings: list[str] = []

    def fail(self, path: str, message: str) -> AuditSpecError:
        return AuditSpecError(f"{self.source}: {path}: {message}")

    def mapping(self, value: Any, path: str, allowed: dict[str, bool]) -> dict[str, Any]:
        """Check ``value`` is a mapping whose keys are in ``allowed`` (key -> required)."""
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_type(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key; allowed keys here: {', '.join(sorted(allowed))}",
                )
        for key, required in allowed.items():
            if required and key not in value:
                raise self.fail(path or "top level", f"missing required key '{key}'")
        return value

    def string(self, value: Any, path: str, *, allow_empty: bool = False) -> str:
        if not isinstance(value, str) or not (value.strip() or allow_empty):
            raise self.fail(path, f"expected a non-empty string, got {_type(value)}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number, got {_type(value)}")
        return float(value)

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_type(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def strings(self, value: Any, path: str, *, allow_empty: bool = False, dedupe: bool = True) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list):
            raise self.fail(path, f"expected a list of strings, got {_type(value)}")
        if not value and not allow_empty:
            raise self.fail(path, "the list is empty")
        items = [self.string(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if dedupe:
            seen: set[str] = set()
            unique = []
            for i, item in enumerate(items):
                if item in seen:
                    self.warnings.append(f"{self.source}: {path}[{i}]: duplicated entry {item!r} ignored")
                else:
                    seen.add(item)
                    unique.append(item)
            items = unique
        return tuple(items)

    def string_map(self, value: Any, path: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of strings, got {_type(value)}")
        return {self.string(k, f"{path} key"): self.string(v, f"{path}.{k}") for k, v in value.items()}


def _type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"[:80]


def _template(r: _Reader, value: Any, path: str, placeholders: tuple[str, ...]) -> str:
    text = r.string(value, path)
    for ph in placeholders:
        if ph not in text:
            raise r.fail(path, f"template {text!r} must contain {ph}")
    return text


def parse_audit_spec(data: Any, source: str = "<audit>") -> AuditSpec:
    """Validate a loaded YAML document and build the :class:`AuditSpec`."""
    r = _Reader(source)
    top = r.mapping(
        data,
        "",
        {
            "name": True,
            "description": False,
            "attributes": True,
            "intersections": False,
            "min_group_size": False,
            "classes": False,
            "skew": False,
            "group_prompts": False,
            "harmful": False,
            "policy": False,
            "bootstrap": False,
        },
    )
    name = r.string(top["name"], "name")
    if any(c in name for c in "/\\") or name.startswith("."):
        raise r.fail("name", f"{name!r} is used as a folder name; use letters, digits, '_' or '-'")

    raw_attrs = top["attributes"]
    if not isinstance(raw_attrs, list) or not raw_attrs:
        raise r.fail("attributes", f"expected a non-empty list, got {_type(raw_attrs)}")
    attributes = []
    for i, a in enumerate(raw_attrs):
        p = f"attributes[{i}]"
        a = r.mapping(a, p, {"column": True, "groups": False, "reference": False})
        column = r.string(a["column"], f"{p}.column")
        groups = r.strings(a["groups"], f"{p}.groups") if "groups" in a else None
        reference = r.string(a["reference"], f"{p}.reference") if "reference" in a else None
        if reference is not None and groups is not None and reference not in groups:
            raise r.fail(f"{p}.reference", f"{reference!r} is not one of the listed groups {list(groups)}")
        attributes.append(AttributeSpec(column, groups, reference))
    columns = [a.column for a in attributes]
    if len(set(columns)) != len(columns):
        raise r.fail("attributes", f"a column is listed twice: {columns}")

    intersections = []
    for i, inter in enumerate(top.get("intersections") or []):
        p = f"intersections[{i}]"
        cols = r.strings(inter, p)
        if len(cols) < 2:
            raise r.fail(p, "an intersection needs at least two columns")
        for c in cols:
            if c not in columns:
                raise r.fail(p, f"column {c!r} is not one of the attributes {columns}")
        intersections.append(cols)

    min_group_size = r.integer(top.get("min_group_size", DEFAULT_MIN_GROUP_SIZE), "min_group_size", minimum=1)

    classes = None
    if "classes" in top:
        c = r.mapping(top["classes"], "classes", {"labels": False, "templates": False, "wording": False, "prompts": False})
        labels = r.strings(c["labels"], "classes.labels") if "labels" in c else None
        templates = tuple(
            _template(r, t, f"classes.templates[{i}]", ("{}",))
            for i, t in enumerate(r.strings(c.get("templates", []), "classes.templates", allow_empty=True))
        )
        wording = r.string_map(c.get("wording", {}), "classes.wording")
        prompts_raw = c.get("prompts", {})
        if not isinstance(prompts_raw, dict):
            raise r.fail("classes.prompts", f"expected a mapping of class -> list of prompts, got {_type(prompts_raw)}")
        prompts = {
            r.string(k, "classes.prompts key"): r.strings(v, f"classes.prompts.{k}", allow_empty=True)
            for k, v in prompts_raw.items()
        }
        for where, keys in (("wording", wording), ("prompts", prompts)):
            if labels is not None:
                for key in keys:
                    if key not in labels:
                        raise r.fail(f"classes.{where}.{key}", f"not one of classes.labels {list(labels)}")
        classes = ClassSpec(labels, templates, wording, prompts)
        if labels is not None:
            _check_class_prompts(r, classes, labels)

    skew = None
    if "skew" in top:
        s = r.mapping(top["skew"], "skew", {"prompts": False, "templates": False, "concepts": False, "k": True,
                                           "targets": False, "controls": False, "extra_controls": False})
        prompts = list(r.strings(s["prompts"], "skew.prompts")) if "prompts" in s else []
        if ("templates" in s) != ("concepts" in s):
            raise r.fail("skew", "templates and concepts go together (each template is filled with each concept)")
        if "templates" in s:
            templates = [_template(r, t, f"skew.templates[{i}]", ("{}",)) for i, t in enumerate(r.strings(s["templates"], "skew.templates"))]
            for concept in r.strings(s["concepts"], "skew.concepts"):
                prompts.extend(fill_template(t, concept) for t in templates)
        if not prompts:
            raise r.fail("skew", "give prompts, or templates and concepts")
        unique = list(dict.fromkeys(prompts))
        if len(unique) != len(prompts):
            dups = sorted({p for p in prompts if prompts.count(p) > 1})
            r.warnings.append(f"{source}: skew: duplicated prompts counted once: {dups}")
        k_raw = s["k"] if isinstance(s["k"], list) else [s["k"]]
        ks = tuple(sorted({r.integer(v, f"skew.k[{i}]", minimum=1) for i, v in enumerate(k_raw)}))
        targets = r.strings(s.get("targets", list(DEFAULT_TARGETS)), "skew.targets")
        for i, t in enumerate(targets):
            if t not in TARGETS:
                raise r.fail(f"skew.targets[{i}]", f"{t!r} is not one of {list(TARGETS)}")
        skew = SkewSpec(tuple(unique), ks, targets, _controls(r, s, unique))

    group_prompts = []
    raw_gp = top.get("group_prompts") or []
    if not isinstance(raw_gp, list):
        raise r.fail("group_prompts", f"expected a list, got {_type(raw_gp)}")
    for i, g in enumerate(raw_gp):
        p = f"group_prompts[{i}]"
        g = r.mapping(g, p, {"attribute": True, "template": True, "concepts": True, "terms": False, "reference": False})
        attribute = r.string(g["attribute"], f"{p}.attribute")
        if attribute not in columns:
            raise r.fail(f"{p}.attribute", f"{attribute!r} is not one of the attributes {columns}")
        template = _template(r, g["template"], f"{p}.template", ("{group}", "{concept}"))
        terms = r.string_map(g.get("terms", {}), f"{p}.terms")
        wordings = list(terms.values())
        if len(set(wordings)) != len(wordings):
            raise r.fail(f"{p}.terms", f"two groups share the same wording {wordings}; their prompts would be identical")
        reference = r.string(g["reference"], f"{p}.reference") if "reference" in g else None
        group_prompts.append(GroupPromptSpec(attribute, template, r.strings(g["concepts"], f"{p}.concepts"), terms, reference))

    harmful = None
    if "harmful" in top:
        h = r.mapping(top["harmful"], "harmful", {"labels": True, "templates": False})
        templates = None
        if "templates" in h:
            templates = tuple(_template(r, t, f"harmful.templates[{i}]", ("{}",)) for i, t in enumerate(r.strings(h["templates"], "harmful.templates")))
        harmful = HarmfulSpec(r.strings(h["labels"], "harmful.labels"), templates)
        if classes is not None and classes.labels is not None:
            clash = set(harmful.labels) & set(classes.labels)
            if clash:
                raise r.fail("harmful.labels", f"{sorted(clash)} are also task classes; a label cannot be both")

    policy = PolicySpec()  # the defaults, stated once in the dataclass
    if "policy" in top:
        pol = r.mapping(top["policy"], "policy", {"alpha": False, "checks": False, "domain_check": False})
        alpha = r.number(pol.get("alpha", policy.alpha), "policy.alpha")
        if not 0 < alpha < 1:
            raise r.fail("policy.alpha", f"must lie in (0, 1), got {alpha}")
        raw_checks = pol.get("checks") or []
        if not isinstance(raw_checks, list):
            raise r.fail("policy.checks", f"expected a list, got {_type(raw_checks)}")
        checks = [_parse_check(r, c, f"policy.checks[{i}]", columns, intersections) for i, c in enumerate(raw_checks)]
        names = [c.name for c in checks]
        if len(set(names)) != len(names):
            raise r.fail("policy.checks", f"check names must be unique, got {names}")
        add_domain = pol.get("domain_check", policy.domain_check)
        if not isinstance(add_domain, bool):
            raise r.fail("policy.domain_check", f"expected true or false, got {_type(add_domain)}")
        if add_domain and DOMAIN_CHECK_NAME in names:
            raise r.fail("policy.checks", f"{DOMAIN_CHECK_NAME!r} is the name of the automatic domain check; rename yours")
        policy = PolicySpec(alpha, tuple(checks), add_domain)

    boot = BootstrapSpec()  # the defaults, stated once in the dataclass
    if "bootstrap" in top:
        b = r.mapping(top["bootstrap"], "bootstrap", {"n_boot": False, "seed": False, "level": False, "n_perm": False})
        level = r.number(b.get("level", boot.level), "bootstrap.level")
        if not 0.5 <= level < 1:
            raise r.fail("bootstrap.level", f"must lie in [0.5, 1), got {level}")
        boot = BootstrapSpec(
            n_boot=r.integer(b.get("n_boot", boot.n_boot), "bootstrap.n_boot", minimum=1),
            seed=r.integer(b.get("seed", boot.seed), "bootstrap.seed", minimum=0),
            level=level,
            n_perm=r.integer(b.get("n_perm", boot.n_perm), "bootstrap.n_perm", minimum=1),
        )

    description = r.string(top["description"], "description") if "description" in top else ""
    return AuditSpec(
        name=name,
        description=description,
        attributes=tuple(attributes),
        intersections=tuple(intersections),
        min_group_size=min_group_size,
        classes=classes,
        skew=skew,
        group_prompts=tuple(group_prompts),
        harmful=harmful,
        policy=policy,
        bootstrap=boot,
        source=source,
        warnings=tuple(r.warnings),
    )


def _controls(r: _Reader, s: dict[str, Any], concept_prompts: list[str]) -> tuple[str, ...]:
    """The control panel: ``skew.controls`` (else the shipped panel) plus ``skew.extra_controls``.

    A control that is also a concept prompt would be compared with itself: it is dropped
    with a warning.
    """
    panel = list(r.strings(s["controls"], "skew.controls")) if "controls" in s else list(DEFAULT_CONTROL_PROMPTS)
    if "extra_controls" in s:
        panel += r.strings(s["extra_controls"], "skew.extra_controls")
    unique = list(dict.fromkeys(panel))
    clash = [p for p in unique if p in concept_prompts]
    if clash:
        r.warnings.append(f"{r.source}: skew: control prompt(s) {clash} are also concept prompts; left out of the controls")
    controls = tuple(p for p in unique if p not in concept_prompts)
    if len(controls) < 2:
        raise r.fail("skew.controls", f"needs at least two control prompts besides the concept prompts, got {list(controls)}")
    return controls


def _check_class_prompts(r: _Reader, classes: ClassSpec, labels: tuple[str, ...]) -> None:
    """Record a warning for a class without prompts and for a prompt shared by two classes."""
    owner: dict[str, str] = {}
    for label in labels:
        prompts = classes.prompts_for(label)
        if not prompts:
            r.warnings.append(
                f"{r.source}: classes: class {label!r} has no prompts (add classes.templates or classes.prompts.{label}); "
                "zero-shot metrics are not computed"
            )
        for p in prompts:
            if p in owner and owner[p] != label:
                r.warnings.append(f"{r.source}: classes: prompt {p!r} describes both {owner[p]!r} and {label!r}")
            owner.setdefault(p, label)


def _parse_check(r: _Reader, raw: Any, path: str, columns: list[str], intersections: list) -> CheckSpec:
    c = r.mapping(
        raw,
        path,
        {
            "name": False,
            "metric": True,
            "warn": True,
            "fail": True,
            "direction": False,
            "models": False,
            "regression": False,
            "attribute": False,
            "group": False,
            "label": False,
            "prompt": False,
            "k": False,
            "target": False,
        },
    )
    metric = r.string(c["metric"], f"{path}.metric")
    if metric not in METRICS:
        raise r.fail(f"{path}.metric", f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}")
    direction = c.get("direction", DEFAULT_DIRECTION.get(metric))
    if direction is None:
        raise r.fail(f"{path}.direction", f"metric {metric!r} has no default direction; set one of {list(DIRECTIONS)}")
    direction = r.string(direction, f"{path}.direction")
    if direction not in DIRECTIONS:
        raise r.fail(f"{path}.direction", f"{direction!r} is not one of {list(DIRECTIONS)}")
    warn = r.number(c["warn"], f"{path}.warn")
    fail = r.number(c["fail"], f"{path}.fail")
    if (direction == "lower_is_worse" and fail > warn) or (direction != "lower_is_worse" and fail < warn):
        raise r.fail(path, f"fail threshold {fail} is milder than warn threshold {warn} for direction {direction}")
    attribute = r.string(c["attribute"], f"{path}.attribute", allow_empty=True) if "attribute" in c else None
    known_attrs = columns + ["*".join(i) for i in intersections]
    if attribute and attribute not in known_attrs:
        raise r.fail(f"{path}.attribute", f"{attribute!r} is not one of {known_attrs}")
    target = r.string(c["target"], f"{path}.target") if "target" in c else None
    if target is not None and target not in TARGETS:
        raise r.fail(f"{path}.target", f"{target!r} is not one of {list(TARGETS)}")
    models = r.strings(c["models"], f"{path}.models") if "models" in c else None
    regression = c.get("regression", False)
    if not isinstance(regression, bool):
        raise r.fail(f"{path}.regression", f"expected true or false, got {_type(regression)}")
    if models is not None and DELTA_ROLE in models and len(models) > 1:
        raise r.fail(f"{path}.models", f"{list(models)} mixes the regression role {DELTA_ROLE!r} with model roles; "
                                       "write two checks")
    if regression and models is not None and tuple(models) != (DELTA_ROLE,):
        raise r.fail(f"{path}.regression", f"a regression check is on the {DELTA_ROLE!r} rows; drop models {list(models)}")
    on_delta = regression or (models is not None and DELTA_ROLE in models)
    if on_delta:
        models = (DELTA_ROLE,)
    group = r.string(c["group"], f"{path}.group", allow_empty=True) if "group" in c else None
    default_name = "_".join(str(x) for x in (metric, attribute, c.get("k"), target) if x is not None)
    if on_delta and "name" not in c:
        default_name += "_change"
    return CheckSpec(
        metric=metric,
        warn=warn,
        fail=fail,
        direction=direction,
        name=r.string(c.get("name", default_name), f"{path}.name"),
        models=models,
        attribute=attribute,
        group=group,
        label=r.string(c["label"], f"{path}.label", allow_empty=True) if "label" in c else None,
        prompt=r.string(c["prompt"], f"{path}.prompt", allow_empty=True) if "prompt" in c else None,
        k=r.integer(c["k"], f"{path}.k", minimum=1) if "k" in c else None,
        target=target,
        kind=check_kind(metric, group, on_delta),
    )


def load_audit_spec(path: str | os.PathLike) -> AuditSpec:
    """Read and validate an audit definition file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuditSpecError(f"{path}: audit definition not found; the shipped ones are in audits/") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AuditSpecError(f"{path}: not valid YAML: {e}") from None
    return parse_audit_spec(data, str(path))
