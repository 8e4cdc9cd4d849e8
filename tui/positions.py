"""The trader's positions for the portfolio check in the risk form (key ``r``), kept between sessions in a
small JSON file under the XDG data directory (``$XDG_DATA_HOME/liqheat/positions.json``, by default
``~/.local/share/liqheat/positions.json``). Nothing leaves the machine: with ``--connect`` the list is sent
to the server only as the query of one ``GET /api/v1/risk``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_POSITIONS = 20  # the engine's limit for one portfolio check
MAX_FILE_BYTES = 64_000  # a hand-edited file larger than this is not ours: ignore it


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "liqheat"


@dataclass(frozen=True)
class SavedPosition:
    symbol: str
    side: str
    entry: float
    leverage: float
    size_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "side": self.side, "entry": self.entry, "leverage": self.leverage,
                "size": self.size_usd}

    @classmethod
    def from_dict(cls, d: Any) -> SavedPosition | None:
        """None for anything malformed (a damaged file loses that entry, never the dashboard)."""
        try:
            p = cls(str(d["symbol"]), str(d["side"]), float(d["entry"]), float(d["leverage"]), float(d["size"]))
        except (KeyError, TypeError, ValueError):
            return None
        ok = p.side in ("long", "short") and all(math.isfinite(x) and x > 0 for x in (p.entry, p.leverage, p.size_usd))
        return p if ok else None


class PositionStore:
    """Positions and the exposure limit, read once and written on every change."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / "positions.json"
        self.positions: list[SavedPosition] = []
        self.limit_share = 0.10
        self.error = ""  # why the file could not be read or written (shown in the form, one line)
        self._load()

    def _load(self) -> None:
        try:
            if not self.path.exists():
                return
            if self.path.stat().st_size > MAX_FILE_BYTES:
                self.error = f"{self.path}: too large, ignored"
                return
            body = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            self.error = f"{self.path}: {exc}"
            return
        if not isinstance(body, dict):
            self.error = f"{self.path}: not a positions file, ignored"
            return
        items = body.get("positions") if isinstance(body.get("positions"), list) else []
        self.positions = [p for p in (SavedPosition.from_dict(d) for d in items) if p is not None][:MAX_POSITIONS]
        limit = body.get("limit_share")
        if isinstance(limit, (int, float)) and 0.001 <= limit <= 1:
            self.limit_share = float(limit)

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"positions": [p.to_dict() for p in self.positions],
                                       "limit_share": self.limit_share}, indent=1))
            tmp.replace(self.path)  # never a half-written file
            self.error = ""
        except OSError as exc:
            self.error = f"could not save {self.path}: {exc}"

    def add(self, p: SavedPosition) -> None:
        if len(self.positions) >= MAX_POSITIONS:
            raise ValueError(f"at most {MAX_POSITIONS} positions")
        self.positions.append(p)
        self.save()

    def remove_last(self) -> None:
        if self.positions:
            self.positions.pop()
            self.save()

    def clear(self) -> None:
        self.positions = []
        self.save()

    def set_limit(self, share: float) -> None:
        self.limit_share = share
        self.save()
