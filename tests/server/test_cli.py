"""``liqheat serve``'s command line: what it accepts and how it refuses (without starting a market)."""

from __future__ import annotations

import argparse
import socket

import pytest

from engine.cli import main as liqheat
from server import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_serve_the_demo_market_on_loopback():
    args = parse()
    spec = cli._spec(args)
    assert spec.feeds == ("demo",) and spec.symbols is None and spec.ladder is None
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_every_option_reaches_the_feed_spec():
    args = parse("--feed", "demo", "--feed", "file:/tmp/x.csv", "--symbols", "BTC", "ETH", "--speed", "60",
                 "--ladder", '{"10": 0.5, "25": 0.5}', "--allow-origin", "https://a.example", "--history-days", "7")
    spec = cli._spec(args)
    assert spec.feeds == ("demo", "file:/tmp/x.csv") and spec.symbols == ("BTC", "ETH")
    assert spec.speed == 60 and spec.history_days == 7
    assert spec.params().ladder.leverage == (10.0, 25.0)
    assert args.allow_origin == ["https://a.example"]


def test_bad_ladder_and_speed_are_refused_before_anything_starts(capsys):
    assert cli.run(parse("--ladder", "nope")) == 2
    assert "unknown ladder 'nope'" in capsys.readouterr().err
    assert cli.run(parse("--speed", "0")) == 2
    assert "--speed" in capsys.readouterr().err


def test_a_busy_port_is_reported_in_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.run(parse("--port", str(port))) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_the_liqheat_command_offers_serve():
    with pytest.raises(SystemExit) as exit_:
        liqheat(["serve", "--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_an_impossible_port_is_a_usage_error_not_a_traceback(port, capsys):
    with pytest.raises(SystemExit) as info:
        liqheat(["serve", "--port", port])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("liqheat serve: error: argument --port:")
