"""The shipped panel of control prompts for prompt-specific association.

A model can put one group on top of *every* ranking (because a group cue such as skin
tone or background tint dominates its image embeddings), and then every neutral prompt
shows skew. To tell "this concept is associated with a group" from "this model sorts
images by group whatever the prompt", each concept prompt's skew is compared with the
skew of prompts that name nothing related to people, skin, health or any attribute an
audit is likely to study: objects, animals, food, places. Their skew is the model's
baseline; a concept's *specific* skew is how far it departs from that baseline, and the
share of controls that already show significant skew is the model's group dominance.

An audit file replaces the panel with ``skew.controls`` or extends it with
``skew.extra_controls`` (a panel in the audited domain's own style of prompt helps: the
baseline then shares the concept prompts' phrasing).
"""

from __future__ import annotations

DEFAULT_CONTROL_PROMPTS: tuple[str, ...] = (
    "a photo of a dog",
    "a photo of a red car",
    "a bowl of fruit",
    "a mountain landscape",
    "a city street at night",
    "a wooden chair",
    "a cup of coffee",
    "a bicycle leaning on a wall",
    "a clock on the wall",
    "a pile of books",
    "a sailing boat",
    "a plate of pasta",
    "a tree in autumn",
    "a computer keyboard",
    "a pair of shoes",
    "a loaf of bread",
    "an acoustic guitar",
    "a house with a garden",
    "a bird on a branch",
    "an open umbrella",
    "a glass of water",
    "a folded map",
    "a staircase",
    "a snowy field",
)
