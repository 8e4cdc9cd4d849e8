"""The config file (``$XDG_CONFIG_HOME/liqheat/config.toml``): thresholds, webhook and defaults set once,
flags override them, a bad file is one line and exit 2 — for ``serve`` and ``tui`` alike."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import AlertSettings, ConfigError, config_path, load_config, parse_config
from server import cli as serve_cli
from tui import cli as tui_cli

TUI_TESTS = str(Path(__file__).resolve().parent / "tui")
GOOD = """
[defaults]
feed = "demo"
symbols = ["ETH"]
ladder = "high"
history_days = 7

[alerts]
within_pct = 2.5
min_grade = "high"
cascade_move_pct = 0
cooldown_s = 60
webhook = "http://127.0.0.1:9/hook"

[risk]
limit_share = 0.2
"""


def test_the_file_lives_under_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "liqheat" / "config.toml"
    absent = load_config()
    assert absent.path is None and absent.alerts == AlertSettings() and absent.risk_limit == 0.10
    (tmp_path / "liqheat").mkdir()
    (tmp_path / "liqheat" / "config.toml").write_text(GOOD)
    cfg = load_config()
    assert cfg.default("symbols") == ["ETH"] and cfg.risk_limit == 0.2
    assert cfg.alerts == AlertSettings(within_pct=2.5, min_grade="high", cascade_move_pct=0.0, cooldown_s=60.0,
                                       webhook="http://127.0.0.1:9/hook")
    # the thresholds become the rules: no cascade rule when its threshold is 0
    assert [r.name for r in cfg.alerts.rules()] == ["proximity", "grade_change"]
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == tmp_path / "home" / ".config" / "liqheat" / "config.toml"


@pytest.mark.parametrize(("text", "words"), [
    ("[alerts]\nwithin_pct = 'near'", "alerts.within_pct: expected a number"),
    ("[alerts]\nmin_grade = 'huge'", "alerts.min_grade: use one of low, elevated, high"),
    ("[alerts]\nwithin_pct = 80", "within_pct must be in (0, 50]"),
    ("[alerts]\nwebhook = 'ftp://x'", "alerts.webhook: must start with http"),
    ("[alerts]\nshout = true", "alerts.shout: unknown setting"),
    ("[colours]\nx = 1", "unknown section [colours]"),
    ("[risk]\nlimit_share = 10", "risk.limit_share: must be between"),
    ("[defaults\nfeed = 1", "not valid TOML"),
])
def test_bad_settings_are_one_line_naming_the_key(text: str, words: str):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config file x.toml")
    msg = str(info.value)
    assert words in msg and msg.startswith("config file x.toml: ") and "\n" not in msg


def _args(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_serve_takes_defaults_from_the_file_and_flags_override_them(tmp_path: Path):
    cfg = parse_config(GOOD)
    spec = serve_cli._spec(_args(serve_cli), cfg)
    assert spec.symbols == ("ETH",) and spec.ladder == "high" and spec.history_days == 7
    assert spec.alerts is cfg.alerts and spec.webhook == "http://127.0.0.1:9/hook"
    spec = serve_cli._spec(_args(serve_cli, "--symbols", "BTC", "--ladder", "swing", "--history-days", "3",
                                 "--webhook", "https://hooks.example/x"), cfg)
    assert spec.symbols == ("BTC",) and spec.ladder == "swing" and spec.history_days == 3
    assert spec.webhook == "https://hooks.example/x"


def test_serve_and_tui_take_a_calibrated_ladder_file(tmp_path: Path):
    ladder = tmp_path / "my.json"
    ladder.write_text('{"10": 0.6, "50": 0.4}')
    spec = serve_cli._spec(_args(serve_cli, "--ladder", str(ladder)))
    assert spec.params().ladder.leverage == (10.0, 50.0)
    hub = spec.build_hubs()[0]
    assert hub.params.ladder.leverage == (10.0, 50.0)


@pytest.mark.parametrize("command", ["serve", "tui"])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, command: str):
    bad = tmp_path / "bad.toml"
    bad.write_text("[alerts]\nwithin_pct = 'near'\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    for argv in (["--config", str(bad)], []):
        if not argv:  # the same file at the XDG location
            (tmp_path / "liqheat").mkdir(exist_ok=True)
            (tmp_path / "liqheat" / "config.toml").write_text(bad.read_text())
        out = subprocess.run([sys.executable, "-m", "engine.cli", command, *argv], capture_output=True, text=True,
                             env=env, timeout=60, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"liqheat {command}: config file ")
        assert "alerts.within_pct: expected a number" in lines[0]


def test_a_missing_named_config_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    args = _args(tui_cli, "--config", str(tmp_path / "nope.toml"))
    assert tui_cli.run(args) == 2


async def test_the_tui_opens_its_markets_with_a_ladder_file(tmp_path: Path):
    """`liqheat tui --ladder my.json` (it used to accept only presets and JSON text)."""
    sys.path.insert(0, TUI_TESTS)
    from tui_support import ScriptedFeed

    from tui.source import LocalSource

    ladder = tmp_path / "my.json"
    ladder.write_text('{"10": 0.6, "50": 0.4}')  # noqa: ASYNC240 - a test's setup, nothing else is running
    source = LocalSource(ScriptedFeed(), None, ladder=str(ladder), history_days=0)
    await source.start()
    try:
        assert source.tiers == ("10x", "50x") and source.svc.params.ladder.weights == (0.6, 0.4)
    finally:
        await source.stop()
