"""The faces (server/, tui/) reach the engine only through its service and its public analytics, so a
number is computed once, in the engine, and both faces show the same one (docs/ANALYTICS_API.md).

Allowed, and why:
- ``engine.service``   markets, views, the model's types and errors (re-exported there)
- ``engine.analytics`` touch, ranked zones, risk, portfolio, cascades, sessions, alerts
- ``engine.config``    the user's config file (command-line plumbing: serve and tui read it)
Everything else (engine.model.*, engine.feeds.*, engine.alerts, engine.store, ...) is the engine's
inside; a face that needs something from there should get it through the service.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"engine.service", "engine.analytics", "engine.config"}
FACE_FILES = sorted(p for face in ("server", "tui") for p in (ROOT / face).rglob("*.py"))


def engine_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``engine`` import in a file, at any depth (lazy imports count too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "engine"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine":  # `from engine import alerts` names a submodule
                out += [(node.lineno, f"engine.{a.name}") for a in node.names]
            elif node.module.split(".")[0] == "engine":
                out.append((node.lineno, node.module))
    return out


def test_there_are_faces_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in FACE_FILES}
    assert {"server/api.py", "server/live.py", "tui/app.py", "tui/source.py", "tui/remote.py"} <= names


@pytest.mark.parametrize("path", FACE_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_face_imports_only_the_service_and_the_public_analytics(path: Path):
    bad = [f"line {line}: {module}" for line, module in engine_imports(path) if module not in ALLOWED]
    assert not bad, f"{path.relative_to(ROOT)} reaches into the engine: {', '.join(bad)}"


def test_the_checker_sees_lazy_and_submodule_imports(tmp_path: Path):
    f = tmp_path / "face.py"
    f.write_text("def run():\n    from engine.model import Zone\n    import engine.feeds.demo\nfrom engine import alerts\n"
                 "from engine.service import Hub\n")
    assert sorted(m for _, m in engine_imports(f)) == ["engine.alerts", "engine.feeds.demo", "engine.model",
                                                       "engine.service"]


def test_the_faces_per_face_analytics_modules_are_gone():
    assert not (ROOT / "server" / "analytics.py").exists()
    assert not (ROOT / "tui" / "analytics.py").exists()
