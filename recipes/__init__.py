raise ImportError(
    "recipes/ holds runnable scripts, not a package: run `accelerate launch recipes/medical.py`; "
    "shared code belongs in workbench/ (e.g. workbench.train)"
)
