"""Fixtures every test directory can use.

- ``shared_data``: the real market data in ../shared/data beside the repository (skips when absent, so a
  clone without it still runs the rest).
- The repository root is importable (``benchmarks.reference`` is a test oracle) whatever the runner's cwd.
- ``postgres_url`` (a fresh database on a session PostgreSQL), ``own_postgres`` and ``redis_server`` (servers
  a test may stop and restart): real servers from tests/real_servers.py.
- NO_COLOR and TEXTUAL_* (except the snapshot plugin's own TEXTUAL_SNAPSHOT_*) are cleared, so colours
  and terminal output are the same on a developer's machine and in CI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# real Redis / PostgreSQL servers on loopback (tests/real_servers.py)
from real_servers import own_postgres, postgres_server, postgres_url, redis_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _deterministic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        # TEXTUAL_SNAPSHOT_* belongs to the snapshot test plugin itself, not to how anything renders
        if name == "NO_COLOR" or (name.startswith("TEXTUAL_") and not name.startswith("TEXTUAL_SNAPSHOT")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real market data (../shared/data relative to the repository root)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA
