"""Query-string validation: every parameter checked, every failure one line for the user (→ HTTP 400)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from engine.service import TIMEFRAMES


class BadRequest(ValueError):
    """A parameter the server will not act on; the message is the whole JSON error."""


class Query:
    """Typed access to a request's query string. Each getter validates and records the name; ``done()``
    then rejects parameters nobody asked for, so a typo (``timeframes=``) is an error, not a silent default."""

    def __init__(self, query: Mapping[str, str], strict: bool = True) -> None:
        self._q = query
        self._seen: set[str] = set()
        self._strict = strict
        getall = getattr(query, "getall", None)  # aiohttp's MultiDict: ?a=1&a=2 is ambiguous, refuse it
        if getall is not None:
            for key in set(query):
                if len(getall(key)) > 1:
                    raise BadRequest(f"parameter {key!r} given more than once")

    def raw(self, name: str) -> str | None:
        self._seen.add(name)
        value = self._q.get(name)
        if value is None:
            return None
        if value == "":
            if self._strict:  # `?timeframe=` is a mistake, not a request for the default
                raise BadRequest(f"parameter {name!r} is empty")
            return None
        if len(value) > 2000:
            raise BadRequest(f"parameter {name!r} is too long")
        return value

    def text(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise BadRequest(f"missing parameter {name!r}")
            return default
        return value

    def required(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            out = int(value)
        except ValueError:
            raise BadRequest(f"{name} must be an integer, got {value[:40]!r}") from None
        if not (lo <= out <= hi):
            raise BadRequest(f"{name} must be between {lo} and {hi}, got {out}")
        return out

    def number(self, name: str, default: float | None, lo: float, hi: float, *, open_low: bool = False) -> float | None:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            out = float(value)
        except ValueError:
            raise BadRequest(f"{name} must be a number, got {value[:40]!r}") from None
        if not math.isfinite(out) or out > hi or out < lo or (open_low and out == lo):
            bound = f"above {lo:g}" if open_low else f"at least {lo:g}"
            raise BadRequest(f"{name} must be {bound} and at most {hi:g}, got {value[:40]}")
        return out

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise BadRequest(f"{name} must be true or false, got {value[:40]!r}")

    def choice(self, name: str, default: str, options: Iterable[str]) -> str:
        opts = tuple(options)
        value = self.text(name, default)
        assert value is not None
        if value not in opts:
            raise BadRequest(f"{name} must be one of {', '.join(opts)}, got {value[:40]!r}")
        return value

    def timeframe(self, default: str = "5m", allowed: Iterable[str] = TIMEFRAMES) -> str:
        return self.choice("timeframe", default, allowed)

    def done(self) -> None:
        if not self._strict:
            return
        unknown = sorted(set(self._q) - self._seen)
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}")


def parse_tier(value: str | int | None, labels: tuple[str, ...]) -> int | None:
    """``all``/None → None (all tiers); a label (``25x``) or an index → the tier index."""
    if value is None or value == "all" or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest("tier must be 'all', a tier label or an index")
    if isinstance(value, int):
        idx = value
    else:
        text = str(value).strip()
        if text in labels:
            return labels.index(text)
        if text.lower().rstrip("x") and text.lower() != text.lower().rstrip("x"):
            # "25.0x", "25X": compare as numbers
            try:
                lev = float(text.lower().rstrip("x"))
            except ValueError:
                raise BadRequest(f"unknown tier {text[:20]!r}; tiers: all, {', '.join(labels)}") from None
            for i, lab in enumerate(labels):
                if float(lab.rstrip("x")) == lev:
                    return i
            raise BadRequest(f"unknown tier {text[:20]!r}; tiers: all, {', '.join(labels)}")
        try:
            idx = int(text)
        except ValueError:
            raise BadRequest(f"unknown tier {text[:20]!r}; tiers: all, {', '.join(labels)}") from None
    if not (0 <= idx < len(labels)):
        raise BadRequest(f"tier index must be between 0 and {len(labels) - 1}, got {idx}")
    return idx


def tier_name(index: int | None, labels: tuple[str, ...]) -> str:
    return "all" if index is None else labels[index]
