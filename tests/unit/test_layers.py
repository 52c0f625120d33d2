"""Lower layers never import higher ones (CONVENTIONS item 16), read from the code with ``ast``.

``core`` (0) < the stations ``ingestion``, ``features``, ``training``, ``serving`` (1) < what steers them,
``rollout`` and ``monitoring`` (2) < ``ops`` (3). A package may import its own layer and those below.
Every ``import`` and ``from ... import`` counts, at the top of a module or inside a function, relative
ones resolved. A shared piece needed below its home moves down to ``core``; it is not imported upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "loopline"
LAYERS = {
    "core": 0,
    "ingestion": 1,
    "features": 1,
    "training": 1,
    "serving": 1,
    "rollout": 2,
    "monitoring": 2,
    "ops": 3,
}


def _imported(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[str]:
    """The dotted modules an import statement names (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's own package, one level up per extra dot
        base = ".".join(package[: len(package) - node.level + 1])
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "loopline" and parts[1] in LAYERS else None


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """``file:line: <package> (layer n) imports <module> (layer m)`` for every import of a higher layer."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if len(relative.parts) < 2:  # loopline/__init__.py: above no layer
            continue
        home = relative.parts[0]
        package = ["loopline", *relative.parts[:-1]]
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = sorted(
            (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)), key=lambda n: n.lineno
        )
        for node in imports:
            for module in _imported(node, package):
                target = _layer_of(module)
                if target is not None and LAYERS[target] > LAYERS[home]:
                    found.append(
                        f"{path.relative_to(root.parents[1])}:{node.lineno}: {home} (layer {LAYERS[home]}) imports"
                        f" {module} ({target}, layer {LAYERS[target]}): {ast.unparse(node)}"
                    )
                    break  # one line per statement
    return found


def test_every_subpackage_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"give these a layer here (CONVENTIONS 16): {sorted(packages - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    found = upward_imports()
    assert not found, "a lower layer imports a higher one (move the shared piece down to core):\n" + "\n".join(found)


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    core = tmp_path / "include" / "loopline" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "a.py").write_text("def f():\n    from loopline.serving import auth\n")
    (core / "b.py").write_text("from ..monitoring.psi import psi\nfrom . import clock\n")
    (core / "c.py").write_text("import loopline.ops.cli\nfrom loopline.core import errors\n")
    found = upward_imports(tmp_path / "include" / "loopline")
    assert [line.split(": ", 1)[0] for line in found] == [
        "include/loopline/core/a.py:2",
        "include/loopline/core/b.py:1",
        "include/loopline/core/c.py:1",
    ]
    assert "core (layer 0) imports loopline.serving (serving, layer 1): from loopline.serving import auth" in found[0]
