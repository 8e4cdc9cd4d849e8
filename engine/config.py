"""The user's config file: ``$XDG_CONFIG_HOME/liqheat/config.toml`` (default ``~/.config/liqheat/config.toml``).

Alert thresholds, the alert webhook, the risk limit and command defaults, so a trader sets them once.
Command-line flags override the file. A file that cannot be read or says something we do not understand
is a ``ConfigError`` with one line naming the file and the key (the commands print it and exit 2); an
absent file is fine (the defaults below).

    [defaults]
    feed = "demo"
    symbols = ["BTC", "ETH"]
    ladder = "default"       # preset, JSON or a JSON file
    history_days = 30
    timeframe = "5m"
    store = "postgresql://liqheat@db/liqheat"  # `serve`: history from (and live bars into) this store

    [alerts]
    within_pct = 1.0         # price within this % of a zone ...
    min_grade = "elevated"   # ... of at least this grade
    min_usd = 0
    upgrades = true          # alert when a zone's grade goes up
    cascade_move_pct = 3.0   # a simulated cascade would move price this much (0 = off)
    cascade_min_usd = 0      # ... or liquidate at least this much (0 = off)
    cooldown_s = 900
    interval_s = 5
    webhook = "https://example.com/hook"

    [risk]
    limit_share = 0.10
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.alerts import AlertError, CascadeRule, GradeChangeRule, ProximityRule, Rule
from engine.model.views import GRADES


class ConfigError(ValueError):
    """A config file that cannot be used (one line: file and key)."""


@dataclass(frozen=True)
class AlertSettings:
    """The one alert rule set every market gets (both faces, market time)."""

    within_pct: float = 1.0
    min_grade: str | None = "elevated"  # None: any grade
    min_usd: float = 0.0
    upgrades: bool = True
    cascade_move_pct: float = 3.0
    cascade_min_usd: float = 0.0
    cooldown_s: float = 900.0
    interval_s: float = 5.0
    webhook: str | None = None

    def rules(self) -> list[Rule]:
        rules: list[Rule] = [ProximityRule(within_pct=self.within_pct, min_usd=self.min_usd, min_grade=self.min_grade)]
        if self.upgrades:
            rules.append(GradeChangeRule(upgrades_only=True))
        if self.cascade_move_pct > 0 or self.cascade_min_usd > 0:
            rules.append(CascadeRule(min_usd=self.cascade_min_usd or None, min_move_pct=self.cascade_move_pct or None))
        return rules

    def describe(self) -> list[dict[str, Any]]:
        """The rules as JSON (GET /api/v1/alerts)."""
        out: list[dict[str, Any]] = [
            {"type": "proximity", "within_pct": self.within_pct, "min_grade": self.min_grade, "min_usd": self.min_usd}
        ]
        if self.upgrades:
            out.append({"type": "grade_change", "upgrades_only": True})
        if self.cascade_move_pct > 0 or self.cascade_min_usd > 0:
            out.append({"type": "cascade", "min_move_pct": self.cascade_move_pct or None,
                        "min_usd": self.cascade_min_usd or None})
        return out


DEFAULT_LIMIT_SHARE = 0.10


@dataclass(frozen=True)
class Config:
    defaults: dict[str, Any] = field(default_factory=dict)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    risk_limit: float = DEFAULT_LIMIT_SHARE
    path: str | None = None  # the file read, None when there was none

    def default(self, name: str, fallback: Any = None) -> Any:
        return self.defaults.get(name, fallback)


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base.strip() else Path.home() / ".config"
    return root / "liqheat" / "config.toml"


_DEFAULT_KEYS: dict[str, type | tuple[type, ...]] = {
    "feed": str, "symbols": list, "symbol": str, "ladder": str, "history_days": (int, float),
    "timeframe": str, "speed": (int, float), "colors": str, "refresh": (int, float), "store": str,
}
_ALERT_KEYS: dict[str, type | tuple[type, ...]] = {
    "within_pct": (int, float), "min_grade": str, "min_usd": (int, float), "upgrades": bool,
    "cascade_move_pct": (int, float), "cascade_min_usd": (int, float), "cooldown_s": (int, float),
    "interval_s": (int, float), "webhook": str,
}


def _check(where: str, table: Any, known: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key, value in table.items():
        want = known.get(key)
        if want is None:
            raise ConfigError(f"{where}.{key}: unknown setting; known: {', '.join(known)}")
        if isinstance(value, bool) and want is not bool:
            raise ConfigError(f"{where}.{key}: expected a {_kind(want)}, got {value!r}")
        if not isinstance(value, want):
            raise ConfigError(f"{where}.{key}: expected a {_kind(want)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a finite number")
    return dict(table)


def _kind(want: type | tuple[type, ...]) -> str:
    return "number" if want == (int, float) else getattr(want, "__name__", str(want))


def parse_config(text: str, source: str = "config") -> Config:
    """A Config from TOML text; ConfigError (one line, prefixed with ``source``) on anything wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        unknown = set(data) - {"defaults", "alerts", "risk"}
        if unknown:
            raise ConfigError(f"unknown section [{sorted(unknown)[0]}]; known: defaults, alerts, risk")
        defaults = _check("defaults", data.get("defaults", {}), _DEFAULT_KEYS)
        if "symbols" in defaults and not all(isinstance(s, str) for s in defaults["symbols"]):
            raise ConfigError("defaults.symbols: expected a list of strings")
        alerts_in = _check("alerts", data.get("alerts", {}), _ALERT_KEYS)
        if "min_grade" in alerts_in and alerts_in["min_grade"] not in GRADES:
            raise ConfigError(f"alerts.min_grade: use one of {', '.join(GRADES)}")
        for key in ("cooldown_s", "cascade_move_pct", "cascade_min_usd", "min_usd"):
            if key in alerts_in and alerts_in[key] < 0:
                raise ConfigError(f"alerts.{key}: must not be negative")
        if "interval_s" in alerts_in and not (0.5 <= alerts_in["interval_s"] <= 3600):
            raise ConfigError("alerts.interval_s: must be between 0.5 and 3600 seconds")
        if "webhook" in alerts_in and not str(alerts_in["webhook"]).startswith(("http://", "https://")):
            raise ConfigError("alerts.webhook: must start with http:// or https://")
        given: dict[str, Any] = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                                 for k, v in alerts_in.items()}
        alerts = AlertSettings(**given)
        try:
            alerts.rules()  # the rules validate their own ranges
        except AlertError as exc:
            raise ConfigError(f"alerts: {exc}") from None
        risk = _check("risk", data.get("risk", {}), {"limit_share": (int, float)})
        limit = float(risk.get("limit_share", DEFAULT_LIMIT_SHARE))
        if not (0.001 <= limit <= 1.0):
            raise ConfigError("risk.limit_share: must be between 0.001 and 1 (a share, 0.10 = 10%)")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Config(defaults, alerts, limit, source)


def load_config(path: str | Path | None = None) -> Config:
    """The config file (``path``, else the XDG location). Absent default file → defaults; an explicitly
    named file that is missing, or any bad file → ConfigError."""
    explicit = path is not None
    p = Path(path).expanduser() if path is not None else config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {p}: not found") from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_config(text, f"config file {p}")
