"""``--ladder`` on the command line: a preset name, a JSON string, or a path to a JSON file (a calibrated
ladder written by ``liqheat backtest --calibrate FILE``). The model's parse_ladder takes names and JSON;
reading the file is IO, so it lives here."""

from __future__ import annotations

from pathlib import Path

from engine.model.ladder import LADDERS, Ladder, LadderError, parse_ladder


def load_ladder(spec: str | Ladder) -> Ladder:
    """A preset, JSON text, or a JSON file path (``.json`` or any existing file). Raises LadderError."""
    if isinstance(spec, Ladder):
        return spec
    text = spec.strip()
    if text in LADDERS or text.startswith("{"):
        return parse_ladder(text)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            body = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LadderError(f"ladder file {text}: {exc.strerror or exc}") from None
        return parse_ladder(body)
    return parse_ladder(text)  # unknown preset: parse_ladder says which presets exist
