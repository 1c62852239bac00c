"""Training-free debiasing of the text side (Chuang et al. 2023, "Debiasing vision-language
models via biased prompts", arXiv 2302.00070), folded into the model's weights.

1. Embed prompts that describe only the attribute ("a lesion on dark skin", "a photo of a
   female person"): the columns of ``A`` (d x m). Projecting text embeddings onto the
   orthogonal complement of their span, ``P0 = I - A (A^T A)^+ A^T``, removes the directions
   along which the groups differ in text space. The paper spans ``A`` itself, which also
   removes what the prompts share ("a lesion on ... skin", close to every class prompt of a
   dermatology audit); by default each set of prompts that differ only in the group term is
   centred first, so only the directions between groups go (the difference-vector subspace of
   Bolukbasi et al. 2016). On the demo run the paper's span improved 2 checked rows and worsened
   7, the centred one 6 and 5 (BENCHMARKS.md section 12); ``--project-span prompts`` gives the
   paper's form.
2. Calibrate: pairs of prompts that differ only in the group term ("a malignant lesion on
   dark skin" / "... on light skin") should land close together after the projection. The
   paper's calibrated projection minimises
       ||P - P0||_F^2 + lam / |S| * sum_{(i, j) in S} ||P (z_i - z_j)||^2,
   whose gradient 2 (P - P0) + 2 lam P M vanishes at the closed form
       P = P0 (I + lam M)^{-1},   M = (1 / |S|) sum (z_i - z_j)(z_i - z_j)^T.
3. Fold: CLIP's text embedding is ``W h`` (``text_projection``, no bias); ``P W h`` is the same
   as a text projection with weight ``P W``. The result is a plain ``CLIPModel`` whose
   normalised text embeddings are ``normalise(P e)`` for the original embedding ``e``; the
   image tower and the temperature are untouched.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.audit import AuditSpec

# Attribute-only wording when the audit has no group prompts for an attribute (the paper's form).
DEFAULT_ATTRIBUTE_TEMPLATE = "a photo of a {group} person"
# The paper calibrates with lambda in 100-1000 (CLIP ViT). Measured on the demo run (BENCHMARKS.md
# section 12, bench/mitigation.py --projection-sweep), calibration at lambda 100 undid part of the
# projection (4 checked rows improved and 8 worsened, against 6 and 5 uncalibrated), so the default
# is the plain projection of the group differences; --project-lambda turns calibration on.
DEFAULT_CALIBRATION = 0.0
SPANS = ("differences", "prompts")  # what P0 removes: the group differences (default) or the prompts' whole span


@dataclass(frozen=True)
class DebiasPrompts:
    """What the projection is estimated from: attribute-only prompts and calibration pairs."""

    attribute_prompts: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...] = ()
    attributes: tuple[str, ...] = field(default=())
    # attribute_prompts cut into sets that differ only in the group term (one per attribute and template)
    prompt_sets: tuple[tuple[str, ...], ...] = field(default=())

    def set_index(self) -> list[int]:
        """For each attribute prompt, the number of the set it belongs to (all 0 without sets)."""
        where = {p: i for i, prompts in enumerate(self.prompt_sets) for p in prompts}
        return [where.get(p, 0) for p in self.attribute_prompts]

    def texts(self) -> list[str]:
        """Every prompt to embed, once each, attribute prompts first."""
        return list(dict.fromkeys([*self.attribute_prompts, *(p for pair in self.pairs for p in pair)]))


def _attribute_only(template: str) -> str:
    """A group-prompt template with the concept left out: 'a {concept} lesion on {group} skin' -> 'a lesion on {group} skin'."""
    return re.sub(r"\s+", " ", template.replace("{concept}", "")).strip()


def debias_prompts(
    spec: AuditSpec,
    attributes: Sequence[str] | None = None,
    *,
    class_labels: Sequence[str] = (),
    templates: Sequence[str] = (),
) -> DebiasPrompts:
    """The prompts of the audit ``spec`` that describe only the attribute, and the calibration pairs.

    Per attribute (default: every attribute of the audit): ``templates`` (each with ``{group}``)
    when given; else the attribute-only form of the audit's group-prompt templates; else
    :data:`DEFAULT_ATTRIBUTE_TEMPLATE`. Groups are the audit's (with its group-prompt wording).
    Calibration pairs: each group-prompt template filled with each of its concepts and each class
    label, for every two groups (prompts that differ only in the group term).
    """
    chosen = list(attributes) if attributes else list(spec.group_columns)
    known = set(spec.group_columns)
    unknown = [a for a in chosen if a not in known]
    if unknown:
        raise ValueError(f"--project-attributes {' '.join(unknown)}: not an attribute of audit {spec.name!r} "
                         f"(its attributes: {', '.join(spec.group_columns)})")
    for t in templates:
        if "{group}" not in t:
            raise ValueError(f"--project-templates {t!r}: the template has no '{{group}}' for the group term")
    attribute_prompts: list[str] = []
    prompt_sets: list[tuple[str, ...]] = []
    pairs: list[tuple[str, str]] = []
    for name in chosen:
        attr = spec.attribute(name)
        entries = [g for g in spec.group_prompts if g.attribute == name]
        terms: dict[str, str] = {}
        for g in entries:
            terms.update(g.terms)
        groups = list(attr.groups or terms)
        if len(groups) < 2:
            raise ValueError(f"attribute {name!r} of audit {spec.name!r} lists fewer than two groups; "
                             "list them under attributes[].groups to project the attribute out")
        words = [terms.get(g, g) for g in groups]
        own = list(templates) or [_attribute_only(g.template) for g in entries] or [DEFAULT_ATTRIBUTE_TEMPLATE]
        for t in dict.fromkeys(own):
            filled = tuple(t.replace("{group}", w) for w in words)
            attribute_prompts.extend(filled)
            prompt_sets.append(filled)
        for g in entries:
            for concept in dict.fromkeys([*g.concepts, *class_labels]):
                filled = [g.template.replace("{concept}", concept).replace("{group}", w) for w in words]
                pairs.extend(itertools.combinations(filled, 2))
    return DebiasPrompts(tuple(dict.fromkeys(attribute_prompts)), tuple(dict.fromkeys(pairs)), tuple(chosen),
                         tuple(dict.fromkeys(prompt_sets)))


def orthogonal_complement(attribute_embeddings: np.ndarray, sets: Sequence[int] | None = None) -> np.ndarray:
    """``P0 = I - A A^+`` for ``A`` with the attribute prompts' embeddings as columns ((m, d) rows given).

    ``sets`` (one number per prompt): centre each set of prompts on its mean first, so ``P0``
    removes only the directions between the groups of a set, not what the set's prompts share.
    """
    a = np.asarray(attribute_embeddings, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError("orthogonal_complement: no attribute prompt embeddings")
    if sets is not None:
        sets = np.asarray(sets)
        if sets.shape != (a.shape[0],):
            raise ValueError(f"orthogonal_complement: {sets.shape[0]} set numbers for {a.shape[0]} prompts")
        a = a.copy()
        for s in np.unique(sets):
            a[sets == s] -= a[sets == s].mean(axis=0)
    a = a.T  # (d, m)
    # The pseudo-inverse keeps P0 a projection when prompts are (nearly) linearly dependent.
    return np.eye(a.shape[0]) - a @ np.linalg.pinv(a)


def calibrated_projection(
    attribute_embeddings: np.ndarray,
    pair_embeddings: Sequence[tuple[np.ndarray, np.ndarray]] | np.ndarray = (),
    calibration: float = DEFAULT_CALIBRATION,
    sets: Sequence[int] | None = None,
) -> np.ndarray:
    """The paper's calibrated projection ``P0 (I + lam M)^{-1}`` (d x d); ``P0`` without pairs or with lam 0.

    ``pair_embeddings``: (S, 2, d) or a list of (z_i, z_j); each pair differs only in the group term.
    ``sets``: see :func:`orthogonal_complement` (None: the paper's span of the prompts themselves).
    """
    if calibration < 0:
        raise ValueError(f"--project-lambda must be at least 0, got {calibration}")
    p0 = orthogonal_complement(attribute_embeddings, sets)
    pairs = np.asarray(pair_embeddings, dtype=np.float64)
    if calibration == 0 or pairs.size == 0:
        return p0
    if pairs.ndim != 3 or pairs.shape[1] != 2 or pairs.shape[2] != p0.shape[0]:
        raise ValueError(f"calibrated_projection: pairs must be (S, 2, {p0.shape[0]}), got {pairs.shape}")
    diff = pairs[:, 0] - pairs[:, 1]
    m = diff.T @ diff / len(diff)
    # P (I + lam M) = P0, solved as (I + lam M)^T P^T = P0^T (M is symmetric).
    return np.linalg.solve(np.eye(len(m)) + calibration * m, p0.T).T


def projection_objective(p: np.ndarray, p0: np.ndarray, pairs: np.ndarray, calibration: float) -> float:
    """The calibration objective the closed form minimises (for tests and diagnostics)."""
    diff = np.asarray(pairs, dtype=np.float64)
    diff = diff[:, 0] - diff[:, 1]
    return float(np.sum((p - p0) ** 2) + calibration * np.mean(np.sum((diff @ p.T) ** 2, axis=1)))


def fold_text_projection(model, projection: np.ndarray | torch.Tensor):
    """Replace the text projection ``W`` of ``model`` (a CLIPModel) by ``P W`` in place; returns the model.

    Computed in float64 and stored in the weight's own dtype, so the folded model is an
    ordinary CLIPModel (``save_pretrained`` / ``from_pretrained`` as any other).
    """
    layer = model.text_projection
    if getattr(layer, "bias", None) is not None:
        raise ValueError("fold_text_projection: the text projection has a bias; folding P into it would need P b too")
    weight = layer.weight
    p = torch.as_tensor(np.asarray(projection, dtype=np.float64))
    if p.shape != (weight.shape[0], weight.shape[0]):
        raise ValueError(f"fold_text_projection: projection is {tuple(p.shape)}, the text embedding has "
                         f"{weight.shape[0]} dimensions")
    with torch.no_grad():
        folded = p.to(weight.device) @ weight.detach().to(torch.float64)
        weight.copy_(folded.to(weight.dtype))
    return model


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def project_embeddings(text: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``normalise(P t)`` for each row ``t``: what the folded model returns for those prompts."""
    return normalise_rows(normalise_rows(text) @ np.asarray(projection, dtype=np.float64).T)
