"""engine/model stays pure numpy: no IO, no event loop, no exchange or UI library, no faces."""

import ast
from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "engine" / "model"
ENGINE = MODEL.parent
FORBIDDEN_IN_MODEL = {
    "aiohttp", "asyncio", "ccxt", "textual", "rich", "sqlite3", "socket", "requests", "httpx",
    "urllib", "http", "subprocess", "server", "tui", "os", "io", "pathlib", "threading",
}
FACES = {"server", "tui"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_imports_nothing_but_numpy_and_stdlib_math():
    files = sorted(MODEL.rglob("*.py"))
    assert files, "engine/model has no modules"
    for f in files:
        bad = _imports(f) & FORBIDDEN_IN_MODEL
        assert not bad, f"{f.name} imports {sorted(bad)}"


def test_engine_never_imports_a_face():
    for f in sorted(ENGINE.rglob("*.py")):
        bad = _imports(f) & FACES
        assert not bad, f"{f.relative_to(ENGINE)} imports {sorted(bad)}"


def test_numba_only_in_the_compiled_walk():
    """numba costs ~1 s and ~170 MB to import: one module may, and only big grids load it."""
    root = ENGINE.parent
    users = [f.relative_to(root).as_posix() for d in ("engine", "server", "tui") for f in sorted((root / d).rglob("*.py"))
             if "numba" in _imports(f)]
    assert users == ["engine/model/binning_kernel.py"]
