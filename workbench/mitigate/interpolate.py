"""Fairness-aware WiSE-FT: the most accurate mixing weight whose fairness checks pass on validation.

For each alpha the interpolated model (``workbench.train.wise_model``) is audited on the
validation split as the candidate against the base, with the run's audit: the same checks,
thresholds and bootstrap as the release gate. Only the fairness checks count here (the
domain check -- fine-tuning must raise accuracy -- is what the accuracy ranking already
rewards); a weight qualifies when every one of them is "pass". Among qualifying weights the
one with the highest validation accuracy wins (ties: the smaller alpha, closer to the base).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class AlphaOutcome:
    """One point of the sweep: validation accuracy and the fairness checks' verdicts at ``alpha``."""

    alpha: float
    accuracy: float
    check_verdicts: dict[str, str]  # check name (with its row when a check has several) -> verdict

    @property
    def failing(self) -> list[str]:
        return [name for name, v in self.check_verdicts.items() if v != "pass"]

    @property
    def failing_checks(self) -> list[str]:
        """Names of the checks with a row that does not pass (a check with rows per prompt named once)."""
        return list(dict.fromkeys(name.split(" (")[0] for name in self.failing))

    @property
    def passes(self) -> bool:
        return bool(self.check_verdicts) and not self.failing


@dataclass(frozen=True)
class AlphaChoice:
    alpha: float | None  # None: no weight qualifies
    accuracy: float | None
    sweep: tuple[AlphaOutcome, ...] = field(default=())
    sentence: str = ""

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "accuracy": self.accuracy,
            "sentence": self.sentence,
            "sweep": [{"alpha": o.alpha, "accuracy": o.accuracy, "passes": o.passes, "failing": o.failing,
                       "check_verdicts": o.check_verdicts} for o in self.sweep],
        }


def choose_alpha(sweep: Sequence[AlphaOutcome]) -> AlphaChoice:
    """The most accurate alpha whose fairness checks all pass; ``alpha=None`` and a sentence saying so when none does."""
    if not sweep:
        raise ValueError("choose_alpha: the sweep is empty; give at least one --wise-alpha")
    ordered = tuple(sorted(sweep, key=lambda o: o.alpha))
    passing = [o for o in ordered if o.passes]
    if not passing:
        computed = [o for o in ordered if o.check_verdicts]
        if not computed:
            return AlphaChoice(None, None, ordered, "no WiSE-FT weight passes the fairness checks on validation (no "
                                                    "fairness check could be computed at any weight); no model written")
        # The closest weight (fewest rows not passing, then the more accurate) speaks for the sweep;
        # every weight's rows stay in details["sweep"] of summary.json.
        closest = min(computed, key=lambda o: (len(o.failing), -o.accuracy, o.alpha))
        names = closest.failing_checks
        listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        return AlphaChoice(None, None, ordered,
                           f"no WiSE-FT weight passes the fairness checks on validation (closest of {len(ordered)}: "
                           f"alpha {closest.alpha:g}, {len(closest.failing)} of {len(closest.check_verdicts)} rows not "
                           f"passing: {listed}); no model written")
    best = max(passing, key=lambda o: (o.accuracy, -o.alpha))
    return AlphaChoice(best.alpha, best.accuracy, ordered,
                       f"WiSE-FT alpha {best.alpha:g} is the most accurate weight passing every fairness check on "
                       f"validation ({100 * best.accuracy:.1f}% accuracy; {len(passing)} of {len(ordered)} weights pass)")


def fairness_verdicts(checks: Sequence[dict]) -> dict[str, str]:
    """Name -> verdict of the candidate's fairness checks (every check entry except the domain check).

    A check with several rows (one per prompt, say) gets one entry per row, named by its row.
    """
    out: dict[str, str] = {}
    for c in checks:
        if c.get("kind") == "domain":
            continue
        name = str(c["name"])
        detail = [str(c[k]) for k in ("group", "prompt") if c.get(k)]
        key = f"{name} ({', '.join(detail)})" if detail else name
        out[key] = str(c["verdict"])
    return out
