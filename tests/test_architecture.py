"""The import rules of ARCHITECTURE.md hold for every module, at module level and inside functions.

The rules are read from the "Import rules" table of ARCHITECTURE.md, so the document and
this check cannot drift apart. The checker is tested on small planted trees first.
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression  # pytest's parser of -m, so the check means what pytest does

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("workbench", "recipes", "dashboards")
# Folders run as scripts: their own folder is on sys.path, so `from views import x` in
# dashboards/app.py means dashboards.views.x.
SCRIPT_FOLDERS = ("recipes", "dashboards")
ENTRY_POINT = "__main__"
ROOT_PACKAGE = "workbench"


# ---------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the scanned root
    line: int
    importer: str  # the part the importing module belongs to
    imported: str  # the imported module

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} may not import {self.imported}"


def read_rules(architecture_md: Path) -> dict[str, frozenset[str]]:
    """{part: parts it may import} from the table under the '## Import rules' heading."""
    rules: dict[str, frozenset[str]] = {}
    in_section = False
    for line in architecture_md.read_text().splitlines():
        if line.startswith("## "):
            in_section = line.strip() == "## Import rules"
            continue
        if not (in_section and line.startswith("|")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if len(cells) != 2 or len(names) != 1:
            continue  # the header and its separator row
        allowed = re.findall(r"`([^`]+)`", cells[1])
        if not allowed and cells[1] != "nothing":
            raise ValueError(f"{architecture_md}: row {line!r}: list parts in backticks, or write 'nothing'")
        rules[names[0]] = frozenset(allowed)
    if not rules:
        raise ValueError(f"{architecture_md}: no '## Import rules' table found")
    return rules


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the scanned folders of ``root``."""
    found = {}
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(root, path)] = path
    return found


def part_of(module: str, rules: dict[str, frozenset[str]]) -> str | None:
    """The rules' part a module belongs to: the longest dotted prefix named in the rules.

    The part ``workbench`` is the package's own ``__init__`` only, not everything under it.
    """
    if module.split(".")[-1] == ENTRY_POINT:
        return ENTRY_POINT
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in rules and not (prefix == ROOT_PACKAGE and n < len(parts)):
            return prefix
    return None


def _is_package(module: str, modules: dict[str, Path]) -> bool:
    return modules[module].name == "__init__.py"


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported module) for every import of our own code in ``path``, at any depth.

    ``from a import b`` counts as importing ``a.b`` where that is a module, else ``a``;
    relative imports are resolved against ``module``'s package; string literals passed to
    ``importlib.import_module`` count too.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    top = module.split(".")[0]
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def ours(name: str) -> str | None:
        if top in SCRIPT_FOLDERS and name.split(".")[0] != top and f"{top}.{name.split('.')[0]}" in modules:
            name = f"{top}.{name}"
        return name if name.split(".")[0] in SCANNED else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, n) for alias in node.names if (n := ours(alias.name))]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = ours(node.module or "")
            if not source:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else source))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (n := ours(node.args[0].value))
        ):
            found.append((node.lineno, n))
    return found


def check_tree(root: Path, rules: dict[str, frozenset[str]]) -> list[Violation]:
    """Every import under ``root``'s scanned folders that ``rules`` do not allow."""
    modules = modules_under(root)
    violations = []
    for module, path in modules.items():
        importer = part_of(module, rules)
        rel = str(path.relative_to(root))
        if importer is None:
            violations.append(Violation(rel, 0, module, "anything (it is not in the rules; add it to ARCHITECTURE.md)"))
            continue
        for line, target in imported_modules(module, path, modules):
            target_part = part_of(target, rules)
            if target_part == importer and importer != ENTRY_POINT:
                continue
            if target_part not in rules.get(importer, ()) or target_part == ENTRY_POINT:
                violations.append(Violation(rel, line, importer, target))
    return violations


# Parts a light part may import only inside a function, so that loading it never loads them:
# the dashboard reaches a run's models through workbench.live when a reviewer asks, never
# while drawing a page (ARCHITECTURE.md, "What this keeps true").
LAZY_ONLY = {"dashboards": frozenset({"workbench.live"})}


def module_level_import_lines(path: Path) -> set[int]:
    """Lines of the import statements that run when the module is loaded (outside every function)."""
    lines: set[int] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                lines.add(child.lineno)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return lines


def check_lazy_imports(root: Path, rules: dict[str, frozenset[str]],
                       lazy_only: dict[str, frozenset[str]]) -> list[Violation]:
    """Module-level imports of a part that ``lazy_only`` says its importer may load only inside a function."""
    modules = modules_under(root)
    violations = []
    for module, path in modules.items():
        importer = part_of(module, rules)
        lazy = lazy_only.get(importer or "", frozenset())
        if not lazy:
            continue
        eager = module_level_import_lines(path)
        for line, target in imported_modules(module, path, modules):
            if part_of(target, rules) in lazy and line in eager:
                violations.append(Violation(str(path.relative_to(root)), line, importer,
                                            f"{target} at module level (import it inside the function that needs it)"))
    return violations


# ---------------------------------------------------------------------------- the checker, on planted trees


PLANTED_RULES = {
    "recipes": frozenset({"workbench.train", "workbench.audit", "workbench.data"}),
    ENTRY_POINT: frozenset({"workbench.train", "workbench.audit", "workbench.data"}),
    "dashboards": frozenset({"workbench.report"}),
    "workbench.train": frozenset({"workbench.data"}),
    "workbench.audit": frozenset({"workbench.data"}),
    "workbench.report": frozenset(),
    "workbench.data": frozenset({"workbench.demo"}),
    "workbench.demo": frozenset(),
    "workbench": frozenset(),
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "workbench/__init__.py": "",
    "workbench/data/__init__.py": "from workbench.data.load import load\n",
    "workbench/data/load.py": "import os\nfrom workbench.demo import make\n\ndef load():\n    return make()\n",
    "workbench/demo/__init__.py": "def make():\n    return 1\n",
    "workbench/train/__init__.py": "",
    "workbench/train/run.py": "from . import loop\nfrom .loop import step\nfrom workbench import data\n",
    "workbench/train/loop.py": "def step():\n    import workbench.data.load as L\n    return L\n",
    "workbench/train/__main__.py": "from workbench.train.run import loop\nfrom workbench.audit import x\n",
    "workbench/audit/__init__.py": "x = 1\n",
    "workbench/report/__init__.py": "import json\n",
    "recipes/medical.py": "from workbench.train import run\n",
    "dashboards/app.py": "from workbench.report import json\nfrom views import common\n",
    "dashboards/views/__init__.py": "",
    "dashboards/views/common.py": "from views import app_state\nimport views.app_state\n",
    "dashboards/views/app_state.py": "",
}


def test_checker_passes_a_tree_that_keeps_the_rules(tmp_path):
    assert check_tree(_tree(tmp_path, CLEAN), PLANTED_RULES) == []


def test_checker_finds_every_planted_violation_at_module_and_function_level(tmp_path):
    planted = dict(CLEAN)
    planted["workbench/train/run.py"] += "\ndef finish():\n    from workbench.audit import x\n    return x\n"
    planted["workbench/train/loop.py"] += "from ..audit import x\n"
    planted["workbench/demo/__init__.py"] += "import workbench.data\n"
    planted["workbench/data/load.py"] += "import importlib\nimportlib.import_module('workbench.train.run')\n"
    planted["dashboards/views/common.py"] += "from workbench.train import run\n"
    planted["workbench/audit/__init__.py"] += "from recipes.medical import main\n"
    planted["workbench/report/__init__.py"] += "import dashboards.app\nfrom workbench.train import __main__\n"
    planted["workbench/stray.py"] = "import os\n"
    found = {(v.path, v.line, v.importer, v.imported) for v in check_tree(_tree(tmp_path, planted), PLANTED_RULES)}
    assert found == {
        ("workbench/train/run.py", 6, "workbench.train", "workbench.audit"),  # inside a function
        ("workbench/train/loop.py", 4, "workbench.train", "workbench.audit"),  # relative import
        ("workbench/demo/__init__.py", 3, "workbench.demo", "workbench.data"),
        ("workbench/data/load.py", 7, "workbench.data", "workbench.train.run"),
        ("dashboards/views/common.py", 3, "dashboards", "workbench.train.run"),
        ("workbench/audit/__init__.py", 2, "workbench.audit", "recipes.medical"),
        ("workbench/report/__init__.py", 2, "workbench.report", "dashboards.app"),
        ("workbench/report/__init__.py", 3, "workbench.report", "workbench.train.__main__"),
        ("workbench/stray.py", 0, "workbench.stray", "anything (it is not in the rules; add it to ARCHITECTURE.md)"),
    }


def test_lazy_import_check_finds_module_level_imports_only(tmp_path):
    rules = dict(PLANTED_RULES, dashboards=frozenset({"workbench.report", "workbench.live"}),
                 **{"workbench.live": frozenset()})
    planted = dict(CLEAN)
    planted["workbench/live/__init__.py"] = "x = 1\n"
    planted["dashboards/views/common.py"] += (
        "\ndef on_click():\n    from workbench.live import x\n    return x\n"  # lazy: allowed
        "\nif True:\n    import workbench.live\n"  # runs on load: a violation
    )
    planted["dashboards/app.py"] += "from workbench.live import x\n"
    root = _tree(tmp_path, planted)
    assert check_tree(root, rules) == []
    found = {(v.path, v.line) for v in check_lazy_imports(root, rules, {"dashboards": frozenset({"workbench.live"})})}
    assert found == {("dashboards/views/common.py", 9), ("dashboards/app.py", 3)}


def test_rules_table_is_read_as_written(tmp_path):
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text(
        "# A\n\n| part | may import |\n|---|---|\n| `x` | `y` |\n\n## Import rules\n\n"
        "| part | may import |\n|---|---|\n| `workbench.train` | `workbench.data` `workbench.io` |\n"
        "| `workbench.io` | nothing |\n\n## Later\n\n| `z` | `w` |\n"
    )
    assert read_rules(doc) == {"workbench.train": {"workbench.data", "workbench.io"}, "workbench.io": frozenset()}
    doc.write_text("## Import rules\n\n| `workbench.io` | none |\n")
    with pytest.raises(ValueError, match="backticks"):
        read_rules(doc)


# ---------------------------------------------------------------------------- the real tree


RULES = read_rules(REPO / "ARCHITECTURE.md")


def test_the_code_keeps_the_import_rules():
    violations = check_tree(REPO, RULES)
    assert violations == [], "imports that break ARCHITECTURE.md's rules:\n" + "\n".join(map(str, violations))


def test_the_dashboard_loads_models_only_on_request():
    violations = check_lazy_imports(REPO, RULES, LAZY_ONLY)
    assert violations == [], "eager imports of a lazy-only part:\n" + "\n".join(map(str, violations))


def test_the_rules_forbid_the_edges_the_layers_exist_to_prevent():
    forbidden = [
        ("workbench.train", "workbench.audit"),
        ("workbench.audit", "workbench.train"),
        ("dashboards", "workbench.train"),
        ("dashboards", "workbench.audit"),
        ("dashboards", "workbench.models"),
        ("workbench.demo", "workbench.models"),
        ("workbench.demo", "workbench.data"),
        ("workbench.data", "workbench.models"),
    ]
    forbidden += [(part, "recipes") for part in RULES] + [(part, "dashboards") for part in RULES if part != "dashboards"]
    assert [(a, b) for a, b in forbidden if b in RULES.get(a, ())] == []


def test_the_rules_form_layers_without_a_circle():
    """Following 'may import' from any part never leads back to it."""
    circular = []
    for start in RULES:
        reached, frontier = set(), set(RULES[start])
        while frontier:
            reached |= frontier
            frontier = set().union(*(RULES.get(p, frozenset()) for p in frontier)) - reached
        if start in reached:
            circular.append(start)
    assert circular == []


# ---------------------------------------------------------------------------- test commands


def _selects(expression: str, markers: set[str]) -> bool:
    """Whether ``pytest -m expression`` selects a test carrying ``markers`` (pytest's own parser)."""
    return Expression.compile(expression).evaluate(lambda name, /, **kwargs: name in markers)


def test_ci_and_readme_run_one_command_that_selects_every_test_and_plain_pytest_the_fast_ones():
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")][-1]
    readme = [ln.split("#")[0].strip() for ln in (REPO / "README.md").read_text().splitlines()]
    assert ci in readme, f"the README's test command differs from .ci/run's: {ci}"

    words = shlex.split(ci)
    everything = words[words.index("-m", words.index("pytest")) + 1]
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    default = options["addopts"][options["addopts"].index("-m") + 1]
    declared = {m.split(":")[0] for m in options["markers"]}
    assert declared == {"slow", "browser"}
    for n in range(len(declared) + 1):
        for markers in map(set, itertools.combinations(sorted(declared), n)):
            assert _selects(everything, markers), markers
            assert _selects(default, markers) == (not markers), markers
