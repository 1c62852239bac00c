"""The recipes' command line: ``HfArgumentParser`` over a recipe's config dataclass.

A recipe overrides defaults by re-declaring fields (``model: str = DEMO_MODEL``); such a
field has no help of its own, so it takes the help of the field it overrides: every flag
of every recipe shows its help text in ``--help``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence


def inherit_help(config_cls: type) -> type:
    """Give every field of ``config_cls`` without a help text the help of the same field in a base class."""
    own = dataclasses.fields(config_cls)
    for f in own:
        if f.metadata.get("help"):
            continue
        for base in config_cls.__mro__[1:]:
            inherited = getattr(base, "__dataclass_fields__", {}).get(f.name)
            if inherited is not None and inherited.metadata.get("help"):
                # Field.metadata is a read-only mapping: replace it with the base's entries under the field's own.
                f.metadata = types.MappingProxyType({**inherited.metadata, **f.metadata})
                break
    return config_cls


def build_recipe_parser(config_cls: type):
    """The parser of a recipe whose flags are ``config_cls``'s fields (help inherited where overridden)."""
    from transformers import HfArgumentParser

    return HfArgumentParser(inherit_help(config_cls))


def parse_recipe_args(config_cls: type, argv: Sequence[str] | None):
    """Parse ``argv`` into ``config_cls``; unknown flags are an error (argparse exits with status 2)."""
    (config,) = build_recipe_parser(config_cls).parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    return config
