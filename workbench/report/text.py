"""Escaping and number formatting shared by the dashboard, the HTML report and the model card."""

from __future__ import annotations

import html
import math
import re

# Characters that Markdown (CommonMark and GitHub's flavour) gives meaning to.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_md(text: object) -> str:
    """Make any value render as literal text in Markdown: HTML-escaped, punctuation backslashed,
    one line (a newline would end a table row or start a block)."""
    s = html.escape(str(text), quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return re.sub(r"[\r\n]+", " ", s)


def escape_html(text: object) -> str:
    return html.escape(str(text), quote=True)


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def format_value(value: object, *, percent: bool = False, digits: int = 3) -> str:
    if not is_number(value):
        return "n/a"
    if percent:
        return f"{100 * float(value):.1f}%"
    return f"{float(value):.{digits}f}"


def format_estimate(value: object, low: object = None, high: object = None, *, percent: bool = False,
                    digits: int = 3) -> str:
    """'81.0% [76.0, 86.0]': a value with its interval, the interval left out when unknown."""
    text = format_value(value, percent=percent, digits=digits)
    if is_number(low) and is_number(high):
        if percent:
            text += f" [{100 * float(low):.1f}, {100 * float(high):.1f}]"
        else:
            text += f" [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return text


def format_delta(value: object, *, percent: bool = True) -> str:
    """Signed difference: percentage points when ``percent``."""
    if not is_number(value):
        return "n/a"
    return f"{100 * float(value):+.1f} pp" if percent else f"{float(value):+.3f}"


def is_accuracy_like(metric: str) -> bool:
    """Metrics that are shares (shown as percentages) rather than log-ratios or effect sizes."""
    return metric in {"accuracy", "accuracy_difference", "accuracy_gap", "class_accuracy",
                      "demographic_parity_difference", "equalized_odds_difference", "harmful_rate",
                      "group_prompt_preference"}


def format_change(value: object, low: object = None, high: object = None) -> str:
    """'+14.0 pp [+9.0, +19.0]': a difference of shares in percentage points with its interval."""
    text = format_delta(value)
    if is_number(low) and is_number(high):
        text += f" [{100 * float(low):+.1f}, {100 * float(high):+.1f}]"
    return text


def threshold_text(check: dict) -> str:
    """The check's thresholds in words, in the direction that is bad: 'fail below 70.0%, warn below 75.0%'."""
    percent = is_accuracy_like(str(check.get("metric", "")))
    direction = str(check.get("direction", ""))
    word = {"lower_is_worse": "below", "higher_is_worse": "above", "abs_higher_is_worse": "above (absolute value)",
            "min": "below", "max": "above"}.get(direction, "beyond")
    parts = []
    for key, label in (("threshold", "fail"), ("warn_threshold", "warn")):
        if is_number(check.get(key)):
            parts.append(f"{label} {word} {format_value(check[key], percent=percent)}")
    return ", ".join(parts) or "no threshold recorded"


def check_scope(check: dict) -> list[str]:
    """The parts of a check that say what it measures: attribute / group, label, prompt, k, target."""
    scope = [str(check[key]) for key in ("attribute", "group", "label", "prompt") if check.get(key)]
    if check.get("k"):
        scope.append(f"k={check['k']}")
    if check.get("target"):
        scope.append(f"target {check['target']}")
    return scope
