"""Audit inputs with a known truth: a table and model embeddings built from a design, no model.

The validity study (``bench/validity.py``) and the known-answer tests need data where the
right answer is known exactly: a group's true zero-shot accuracy, the true Skew@k of a
prompt, whether a prompt is associated with a group or the model ranks everything by group.
:func:`simulate_audit_inputs` builds exactly that as the audit consumes it -- a table (one
row per image: ``row``, ``label``, the group column) and one
:class:`~workbench.audit.core.ModelEmbeddings` per model role -- and
:class:`SimulatedAudit` gives the true value of each quantity the audit estimates.

How the embeddings encode the design (all vectors unit length, as the audit expects):

- Class prompts are orthonormal directions ``e_c``. An image of a group with accuracy ``p_g``
  is drawn correct with probability ``p_g``; its class coordinates are ``a * e_pred`` where
  ``pred`` is its true class when correct, another class (uniformly) otherwise. Every other
  class scores exactly 0, so the audit's argmax prediction is ``pred``: per-group correct
  counts are Binomial(n_g, p_g) and the true accuracy is ``p_g``.
- Each skew prompt (neutral concept prompts and control prompts) owns one more direction
  ``u_p``. The image's coordinate on it is ``z_ip ~ N(0, 1)``, plus ``planted[p]`` for images of
  the favoured group: a concept associated with that group.
- "The model sorts everything by group": images of the favoured group carry a coordinate
  ``1`` on a shared group direction ``w`` and every prompt's text vector loads on ``w`` with
  weight ``beta_p`` (``dominance``, plus ``dominance_spread`` x N(0, 1) per prompt). Every
  prompt, controls included, then shifts the favoured group up by ``beta_p`` score units.
- A last "filler" coordinate, orthogonal to every text vector, tops each image up to a
  common norm ``R``. Normalising then divides every image by the same ``R``, so the score of
  image i for prompt p is exactly ``(z_ip + shift_p(g_i)) / (R * sqrt(1 + beta_p^2))``:
  within a prompt the ranking is that of ``z_ip + shift_p(g_i)``, with no per-image norm
  effect that could couple prompts or groups.

The true Skew@k of a prompt at depth ``q = k / N`` is then the population value
``ln(P(g | score above the q-quantile) / target_g)`` for a mixture of normals with the
design's group shares (fixed group sizes, as the audit's stratified bootstrap assumes).

Two roles (say ``base`` and ``tuned``) see the same images; their noise is correlated
(``shared`` fraction of variance in common), as two models of the same images are, so
paired differences have realistic, non-degenerate intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from workbench.audit.core import ModelEmbeddings

DEFAULT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
DEFAULT_CLASS_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a drawing of a {}.")
DEFAULT_NEUTRAL_PROMPTS: tuple[str, ...] = ("a photo of concept one", "a photo of concept two", "a photo of concept three")
DEFAULT_CONTROL_PROMPTS: tuple[str, ...] = tuple(f"simulated control prompt {i:02d}" for i in range(1, 21))
# Norm of the class component; any positive value gives the same argmax, this keeps it
# comparable to the unit-variance prompt coordinates.
_CLASS_SCALE = 3.0


@dataclass(frozen=True)
class ModelBehaviour:
    """How one simulated model treats the groups. Score shifts are in noise-SD units.

    Attributes
    ----------
    accuracy:
        Zero-shot accuracy, one value for every group or ``{group: p}``.
    planted:
        ``{prompt: shift}``: the favoured group's images score ``shift`` higher on that prompt
        only (a concept associated with the group).
    dominance:
        Shift of the favoured group on *every* skew prompt, controls included (the model
        ranks images by group whatever the prompt).
    dominance_spread:
        Per-prompt standard deviation of that shift around ``dominance`` (prompts drawn
        exchangeably, so a neutral prompt is just another draw from the control panel).
    favoured_group:
        The group the shifts favour; default the first group.
    """

    accuracy: float | Mapping[str, float] = 0.9
    planted: Mapping[str, float] = field(default_factory=dict)
    dominance: float = 0.0
    dominance_spread: float = 0.0
    favoured_group: str | None = None

    def accuracy_of(self, group: str) -> float:
        if isinstance(self.accuracy, Mapping):
            return float(self.accuracy[group])
        return float(self.accuracy)


@dataclass
class SimulatedAudit:
    """A simulated data set, the embeddings of each role, and the truth behind them."""

    table: pd.DataFrame
    embeddings: dict[str, ModelEmbeddings]
    attribute: str
    groups: tuple[str, ...]
    group_sizes: dict[str, int]
    classes: tuple[str, ...]
    class_templates: tuple[str, ...]
    neutral_prompts: tuple[str, ...]
    control_prompts: tuple[str, ...]
    behaviours: dict[str, ModelBehaviour]
    # role -> prompt -> that prompt's loading on the group direction (drawn once per data set)
    loadings: dict[str, dict[str, float]]

    @property
    def skew_prompts(self) -> tuple[str, ...]:
        return self.neutral_prompts + self.control_prompts

    @property
    def n(self) -> int:
        return len(self.table)

    def favoured(self, role: str) -> str:
        return self.behaviours[role].favoured_group or self.groups[0]

    # -- truth -----------------------------------------------------------------------

    def true_accuracy(self, role: str, group: str) -> float:
        """P(correct) for an image of ``group``: the estimand of the per-group accuracy."""
        return self.behaviours[role].accuracy_of(group)

    def true_accuracy_difference(self, role: str, group: str, reference: str) -> float:
        return self.true_accuracy(role, group) - self.true_accuracy(role, reference)

    def score_shift(self, role: str, prompt: str) -> dict[str, float]:
        """Mean score of each group on ``prompt`` relative to the others (noise SD units)."""
        behaviour = self.behaviours[role]
        favoured = self.favoured(role)
        shift = behaviour.planted.get(prompt, 0.0) + self.loadings[role].get(prompt, 0.0)
        return {g: (shift if g == favoured else 0.0) for g in self.groups}

    def true_skew(self, role: str, prompt: str, k: int, target: str = "uniform") -> dict[str, float]:
        """Population Skew_g@k of ``prompt`` for every group, at depth ``q = k / N``."""
        shift = self.score_shift(role, prompt)
        shares = np.array([self.group_sizes[g] for g in self.groups], dtype=np.float64) / self.n
        top_share = top_share_of_groups(shares, np.array([shift[g] for g in self.groups]), k / self.n)
        wanted = _target(shares, target)
        return {g: float(math.log(top_share[i] / wanted[i])) for i, g in enumerate(self.groups)}

    def true_max_skew(self, role: str, prompt: str, k: int, target: str = "uniform") -> float:
        return max(self.true_skew(role, prompt, k, target).values())

    def true_specific_skew(
        self, role: str, prompt: str, k: int, target: str = "uniform", *, relative_to: str = "panel"
    ) -> dict[str, float]:
        """Skew_g@k of ``prompt`` minus the control prompts' mean Skew_g@k.

        ``relative_to="panel"`` averages over this data set's control prompts (their drawn
        loadings); ``"population"`` over the distribution the loadings were drawn from
        (Gauss-Hermite quadrature), which is what an interval that resamples controls targets.
        """
        own = self.true_skew(role, prompt, k, target)
        if relative_to == "panel":
            per_control = [self.true_skew(role, c, k, target) for c in self.control_prompts]
            baseline = {g: float(np.mean([s[g] for s in per_control])) for g in self.groups}
        elif relative_to == "population":
            baseline = self._population_control_skew(role, k, target)
        else:
            raise ValueError(f"relative_to must be 'panel' or 'population', got {relative_to!r}")
        return {g: own[g] - baseline[g] for g in self.groups}

    def _population_control_skew(self, role: str, k: int, target: str) -> dict[str, float]:
        behaviour = self.behaviours[role]
        shares = np.array([self.group_sizes[g] for g in self.groups], dtype=np.float64) / self.n
        wanted = _target(shares, target)
        favoured = self.groups.index(self.favoured(role))
        nodes, weights = np.polynomial.hermite_e.hermegauss(40)
        weights = weights / weights.sum()
        total = np.zeros(len(self.groups))
        for x, w in zip(nodes, weights):
            shift = np.zeros(len(self.groups))
            shift[favoured] = behaviour.dominance + behaviour.dominance_spread * x
            total += w * np.log(top_share_of_groups(shares, shift, k / self.n) / wanted)
        return {g: float(total[i]) for i, g in enumerate(self.groups)}

    def truth_is_null(self, role: str) -> bool:
        """True when no prompt of ``role`` favours any group (no planted effect, no dominance)."""
        b = self.behaviours[role]
        return not any(b.planted.values()) and b.dominance == 0 and b.dominance_spread == 0


def top_share_of_groups(shares: np.ndarray, shifts: np.ndarray, depth: float) -> np.ndarray:
    """Share of each group among the top ``depth`` fraction of a normal mixture.

    Group g is a fraction ``shares[g]`` of the population and its scores are N(shifts[g], 1).
    Solves ``sum_g shares[g] * P(N(shifts[g], 1) > t) = depth`` for the threshold ``t`` and
    returns ``shares[g] * P(N(shifts[g], 1) > t) / depth``.

    Example
    -------
    >>> [round(float(s), 4) for s in top_share_of_groups(np.array([0.5, 0.5]), np.array([0.0, 0.0]), 0.25)]
    [0.5, 0.5]
    """
    shares = np.asarray(shares, dtype=np.float64)
    shifts = np.asarray(shifts, dtype=np.float64)
    if not 0.0 < depth < 1.0:
        raise ValueError(f"depth k/N must lie strictly between 0 and 1, got {depth}")

    def excess(t: float) -> float:
        return float(np.sum(shares * ndtr(shifts - t)) - depth)

    low = float(shifts.min() + ndtri(1.0 - depth) - 10.0)
    high = float(shifts.max() + ndtri(1.0 - depth) + 10.0)
    t = brentq(excess, low, high, xtol=1e-13)
    return shares * ndtr(shifts - t) / depth


def _target(shares: np.ndarray, target: str) -> np.ndarray:
    if target == "uniform":
        return np.full(shares.shape, 1.0 / shares.size)
    if target == "data":
        return shares
    raise ValueError(f"target must be 'uniform' or 'data', got {target!r}")


def simulate_audit_inputs(
    group_sizes: Mapping[str, int],
    behaviours: Mapping[str, ModelBehaviour],
    *,
    seed: int,
    attribute: str = "group",
    classes: Sequence[str] = DEFAULT_CLASSES,
    class_templates: Sequence[str] = DEFAULT_CLASS_TEMPLATES,
    neutral_prompts: Sequence[str] = DEFAULT_NEUTRAL_PROMPTS,
    control_prompts: Sequence[str] = DEFAULT_CONTROL_PROMPTS,
    shared: float = 0.5,
) -> SimulatedAudit:
    """Build a table and per-role embeddings from a design with known truth.

    Parameters
    ----------
    group_sizes:
        ``{group: number of images}`` for the one sensitive attribute; every size >= 1.
    behaviours:
        ``{role: ModelBehaviour}``, e.g. ``{"model": ModelBehaviour()}`` or
        ``{"base": ..., "tuned": ...}``.
    seed:
        Everything is a deterministic function of the arguments and this seed.
    attribute:
        Name of the group column in the table.
    classes, class_templates:
        Zero-shot classes and the templates (with ``{}``) the audit fills with them; every
        filled prompt of a class gets that class's vector.
    neutral_prompts, control_prompts:
        Skew prompts: the concepts under audit and the control panel. Names must not overlap.
    shared:
        Fraction of each role's noise variance shared with the other roles (0..1).

    Returns
    -------
    SimulatedAudit
        ``table`` (columns ``row``, ``label``, ``attribute``) and ``embeddings[role]``.

    Example
    -------
    >>> sim = simulate_audit_inputs({"a": 50, "b": 50}, {"model": ModelBehaviour(accuracy={"a": 0.9, "b": 0.6})}, seed=0)
    >>> sim.table.shape, sim.embeddings["model"].image.shape
    ((100, 3), (100, 28))
    >>> round(sim.true_accuracy_difference("model", "b", "a"), 6)
    -0.3
    """
    groups = tuple(str(g) for g in group_sizes)
    sizes = {str(g): int(s) for g, s in group_sizes.items()}
    classes = tuple(classes)
    neutral_prompts, control_prompts = tuple(neutral_prompts), tuple(control_prompts)
    _check_design(sizes, behaviours, classes, class_templates, neutral_prompts, control_prompts, shared)
    prompts = neutral_prompts + control_prompts
    n, n_classes, n_prompts = sum(sizes.values()), len(classes), len(prompts)

    shared_rng = np.random.default_rng([seed, 0])
    codes = np.repeat(np.arange(len(groups)), [sizes[g] for g in groups])
    # Balanced labels within each group, then shuffled: class mix does not differ by group.
    labels = np.concatenate([shared_rng.permutation(np.arange(sizes[g]) % n_classes) for g in groups])
    common_uniform = shared_rng.standard_normal(n)
    common_noise = shared_rng.standard_normal((n, n_prompts))
    order = shared_rng.permutation(n)  # rows are not sorted by group in the table
    codes, labels = codes[order], labels[order]
    common_uniform, common_noise = common_uniform[order], common_noise[order]

    table = pd.DataFrame({
        "row": np.arange(n),
        "label": np.asarray(classes, dtype=object)[labels],
        attribute: np.asarray(groups, dtype=object)[codes],
    })

    embeddings: dict[str, ModelEmbeddings] = {}
    loadings: dict[str, dict[str, float]] = {}
    for role_index, (role, behaviour) in enumerate(behaviours.items()):
        rng = np.random.default_rng([seed, 1, role_index])
        favoured = groups.index(behaviour.favoured_group) if behaviour.favoured_group else 0
        in_favoured = (codes == favoured).astype(np.float64)

        # Gaussian copula: correctness is monotone in a latent normal that shares
        # ``shared`` of its variance across roles, so roles err on partly the same images.
        latent = math.sqrt(shared) * common_uniform + math.sqrt(1.0 - shared) * rng.standard_normal(n)
        p_correct = np.array([behaviour.accuracy_of(g) for g in groups])[codes]
        correct = ndtr(latent) < p_correct
        wrong_offset = rng.integers(1, n_classes, size=n) if n_classes > 1 else np.zeros(n, dtype=np.int64)
        predicted = np.where(correct, labels, (labels + wrong_offset) % n_classes)

        noise = math.sqrt(shared) * common_noise + math.sqrt(1.0 - shared) * rng.standard_normal((n, n_prompts))
        planted = np.array([behaviour.planted.get(p, 0.0) for p in prompts])
        prompt_coords = noise + in_favoured[:, None] * planted[None, :]
        beta = behaviour.dominance + behaviour.dominance_spread * rng.standard_normal(n_prompts)
        loadings[role] = {p: float(b) for p, b in zip(prompts, beta)}
        carries_group = behaviour.dominance != 0 or behaviour.dominance_spread != 0
        group_coord = in_favoured if carries_group else np.zeros(n)

        image = np.zeros((n, n_classes + n_prompts + 2), dtype=np.float64)
        image[np.arange(n), predicted] = _CLASS_SCALE
        image[:, n_classes : n_classes + n_prompts] = prompt_coords
        image[:, n_classes + n_prompts] = group_coord
        squared = (image**2).sum(axis=1)
        radius_sq = float(squared.max()) + 1.0
        image[:, -1] = np.sqrt(radius_sq - squared)  # filler: every row has norm sqrt(radius_sq)
        image /= math.sqrt(radius_sq)

        dim = image.shape[1]
        text: dict[str, np.ndarray] = {}
        for ci, c in enumerate(classes):
            vec = np.zeros(dim)
            vec[ci] = 1.0
            for template in class_templates:
                text[template.replace("{}", c)] = vec.astype(np.float32)
        for pi, p in enumerate(prompts):
            vec = np.zeros(dim)
            vec[n_classes + pi] = 1.0
            vec[n_classes + n_prompts] = beta[pi]
            text[p] = (vec / np.linalg.norm(vec)).astype(np.float32)
        fingerprint = f"simulated-seed{seed}-{role}"
        embeddings[role] = ModelEmbeddings(image=image.astype(np.float32), text=text, model=f"simulated:{role}",
                                           fingerprint=fingerprint)

    return SimulatedAudit(
        table=table,
        embeddings=embeddings,
        attribute=attribute,
        groups=groups,
        group_sizes=sizes,
        classes=classes,
        class_templates=tuple(class_templates),
        neutral_prompts=neutral_prompts,
        control_prompts=control_prompts,
        behaviours=dict(behaviours),
        loadings=loadings,
    )


def _check_design(sizes, behaviours, classes, class_templates, neutral_prompts, control_prompts, shared) -> None:
    """One clear message per impossible design, before any array is built."""
    if len(sizes) < 1:
        raise ValueError("group_sizes: give at least one group, e.g. {'a': 100, 'b': 100}")
    for g, s in sizes.items():
        if s < 1:
            raise ValueError(f"group_sizes[{g!r}] = {s}: every group needs at least one image")
    if not behaviours:
        raise ValueError("behaviours: give at least one role, e.g. {'model': ModelBehaviour()}")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes: need at least two distinct class names, got {list(classes)}")
    if not class_templates or any("{}" not in t for t in class_templates):
        raise ValueError(f"class_templates: every template needs a '{{}}' for the class name, got {list(class_templates)}")
    overlap = set(neutral_prompts) & set(control_prompts)
    if overlap:
        raise ValueError(f"prompts {sorted(overlap)} are both neutral and control prompts; use distinct texts")
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"shared must lie in [0, 1], got {shared}")
    prompts = set(neutral_prompts) | set(control_prompts)
    for role, b in behaviours.items():
        for g in sizes:
            p = b.accuracy_of(g) if not isinstance(b.accuracy, Mapping) or g in b.accuracy else None
            if p is None:
                raise ValueError(f"behaviours[{role!r}].accuracy has no value for group {g!r}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"behaviours[{role!r}].accuracy[{g!r}] = {p} is not a probability")
        unknown = sorted(set(b.planted) - prompts)
        if unknown:
            raise ValueError(f"behaviours[{role!r}].planted names prompts {unknown} that are not skew prompts")
        if b.favoured_group is not None and b.favoured_group not in sizes:
            raise ValueError(f"behaviours[{role!r}].favoured_group {b.favoured_group!r} is not one of {list(sizes)}")
        if b.dominance_spread < 0:
            raise ValueError(f"behaviours[{role!r}].dominance_spread must be >= 0, got {b.dominance_spread}")
