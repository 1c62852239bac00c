"""Prompts for zero-shot evaluation on the demo dermatology domain.

CLASS_TEMPLATES wrap the bare class name. DESCRIPTIVE_PROMPTS describe each class only
with words the base learned from the generic corpus (colour, size, shape, edge, texture),
the fair way to ask a base model that never saw a lesion word grounded.
"""

from __future__ import annotations

CLASS_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}.",
    "dermoscopy image of {}",
    "close-up of {}",
    "clinical photo of {} on the skin",
)

DESCRIPTIVE_PROMPTS: dict[str, tuple[str, ...]] = {
    "melanoma": (
        "a large black blob with a ragged edge",
        "a large dark brown blob spotted with blue",
        "a large black blob on tan",
    ),
    "nevus": (
        "a small brown circle with a smooth edge",
        "a small brown circle on beige",
        "a small brown circle in the centre",
    ),
    "basal cell carcinoma": (
        "a pink circle with a white ring",
        "a large pink circle striped with red",
        "a pink ring with a smooth edge",
    ),
    "seborrheic keratosis": (
        "a tan oval spotted with brown",
        "a large tan oval spotted with white",
        "a tan oval with a ragged edge",
    ),
}
