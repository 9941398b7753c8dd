"""Layers point down: no module imports a higher layer (``recovery.LAYERS``), and
``simulators`` never imports ``recovery``.

Every import counts, also those inside functions (a lazy import is still a
dependency) and those under ``TYPE_CHECKING``.
"""

import ast
from pathlib import Path

import pytest

from recovery import LAYERS

ROOT = Path(__file__).resolve().parents[1]


def _modules(root: Path, package: str):
    """``(dotted name, path)`` of every module of a package directory."""
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def _imports(name: str, path: Path):
    """``(line, modules)`` for every import statement in the file (``from a
    import b`` imports ``a`` and maybe the module ``a.b``), relative imports
    resolved against the module ``name``."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            yield node.lineno, [mod] + [f"{mod}.{a.name}" for a in node.names]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer a dotted module name belongs to (the most specific
    entry wins: ``recovery.errors`` before ``recovery``); None: not ours."""
    best, best_len = None, -1
    for i, entries in enumerate(layers):
        for e in entries:
            if (module == e or module.startswith(e + ".")) and len(e) > best_len:
                best, best_len = i, len(e)
    return best


def violations(root: Path, layers=LAYERS) -> list[str]:
    """Every import of a higher layer, and every import of ``recovery`` from ``simulators``."""
    out = []
    for pkg in ("recovery", "simulators"):
        if not (root / pkg).is_dir():
            continue
        for name, path in _modules(root, pkg):
            own = layer_of(name, layers)
            for line, targets in _imports(name, path):
                where = f"{path.relative_to(root)}:{line}"
                for target in targets:  # one finding per statement
                    if pkg == "simulators":
                        if target == "recovery" or target.startswith("recovery."):
                            out.append(f"{where}: simulators imports {target}")
                            break
                        continue
                    other = layer_of(target, layers)
                    if own is not None and other is not None and other > own:
                        out.append(f"{where}: {name} (layer {own}) imports {target} (layer {other})")
                        break
    return out


def test_every_module_imports_only_its_layer_and_below():
    found = violations(ROOT)
    assert found == [], "imports of a higher layer:\n" + "\n".join(found)


def test_every_recovery_module_has_a_layer():
    missing = [name for name, _ in _modules(ROOT, "recovery") if layer_of(name) is None]
    assert missing == []


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("rel, text, expect", [
    # a lazy import of a higher layer inside a function
    ("recovery/causal/bad.py", "def f():\n    from recovery.agents.base import Agent\n",
     "recovery.causal.bad (layer 2) imports recovery.agents.base (layer 4)"),
    # the library raising the CLI's error
    ("recovery/pipeline.py", "from recovery import cli\n", "imports recovery.cli (layer 6)"),
    # a relative import one level up
    ("recovery/data/bad.py", "from ..evaluate import closed_loop\n", "imports recovery.evaluate (layer 5)"),
    ("simulators/bad.py", "import recovery.causal\n", "simulators imports recovery.causal"),
])
def test_the_checker_finds_an_upward_import(tmp_path, rel, text, expect):
    for pkg in ("recovery", "recovery/causal", "recovery/data", "simulators"):
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "recovery/causal/fine.py", "from recovery.data import store\nimport numpy\n")
    assert violations(tmp_path) == []
    _write(tmp_path, rel, text)
    found = violations(tmp_path)
    assert len(found) == 1 and expect in found[0], found
