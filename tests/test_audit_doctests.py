"""The examples in the metric and prompt docstrings are run, so the documentation cannot drift from the code."""

from __future__ import annotations

import doctest

import pytest

import workbench.audit.metrics
import workbench.prompts


@pytest.mark.parametrize("module", [workbench.audit.metrics, workbench.prompts], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    # every public function of the metrics module shows an example; prompts has three
    assert result.attempted >= (20 if module is workbench.audit.metrics else 3)
