"""Fixtures for the dashboard tests (the feed and helpers live in tui_support.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_support import FIXED_NOW, ScriptedFeed  # noqa: E402


@pytest.fixture(scope="session")
def _snapshot_tempdir() -> str | None:
    """pytest-textual-snapshot keeps its report folder in TEXTUAL_SNAPSHOT_TEMPDIR (set at session
    start); read it before the repository-wide fixture that clears TEXTUAL_* takes it away."""
    return os.environ.get("TEXTUAL_SNAPSHOT_TEMPDIR")


@pytest.fixture(autouse=True)
def _plain_terminal_env(monkeypatch: pytest.MonkeyPatch, _snapshot_tempdir: str | None) -> None:
    """Snapshots and colour decisions must not depend on the developer's terminal settings."""
    for name in list(os.environ):
        if (name.startswith("TEXTUAL_") and not name.startswith("TEXTUAL_SNAPSHOT")) or name in ("NO_COLOR", "COLORTERM", "FORCE_COLOR"):
            monkeypatch.delenv(name, raising=False)
    if _snapshot_tempdir is not None:
        monkeypatch.setenv("TEXTUAL_SNAPSHOT_TEMPDIR", _snapshot_tempdir)


@pytest.fixture
def feed() -> ScriptedFeed:
    return ScriptedFeed()


@pytest.fixture
def make_tui(feed: ScriptedFeed) -> Callable[..., Any]:
    """``make_tui(**kw)`` -> the dashboard on ``feed`` (a fixed clock; other feeds for the exchange picker)."""
    from tui.app import make_app
    from tui.source import LocalSource

    def build(**kw: Any) -> Any:
        feeds: dict[str, Any] = kw.pop("feeds", {})
        kw.setdefault("colors", "truecolor")  # the headless driver has no TERM to decide from
        source = LocalSource(feed, kw.pop("symbol", None), history_days=0)
        app = make_app(source=source, clock=lambda: FIXED_NOW, **kw)

        def open_source(name: str) -> LocalSource:
            if name not in feeds:
                raise ValueError(f"no feed {name!r} in this test")
            return LocalSource(feeds[name], None, history_days=0)

        app.open_source = open_source
        return app

    return build
