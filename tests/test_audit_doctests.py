"""The examples in the metric and prompt docstrings are run, so the documentation cannot drift from the code."""

from __future__ import annotations

import doctest

import pytest

import workbench.audit.metrics
import workbench.io
import workbench.prompts

# Examples each module must at least run: every public function of the metrics module shows one.
MINIMUM_EXAMPLES = {workbench.audit.metrics: 20, workbench.prompts: 3, workbench.io: 1}


@pytest.mark.parametrize("module", list(MINIMUM_EXAMPLES), ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= MINIMUM_EXAMPLES[module]
