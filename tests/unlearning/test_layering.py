"""``unlearning`` never imports ``federation``: the training it needs (healing, retraining, the
verification oracle) is injected as a ``RemainingClientsTrainer`` (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "unlearning"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # module level and inside functions
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_unlearning_module_imports_federation_or_cli():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 10  # the walk sees the package
    upward = {f"{path.name}: {name}" for path in sources for name in _imported_modules(path)
              if name.split(".")[0] in ("federation", "cli", "bench")}
    assert not upward, f"unlearning imports upward: {sorted(upward)}"


def test_the_walk_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from federation.coordinator import Coordinator\n")
    assert "federation.coordinator" in _imported_modules(probe)
