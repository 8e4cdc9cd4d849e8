"""``liqheat serve --store``: the single server reads each market's history from a SQLite file or PostgreSQL
first and asks the feed only for the tail after it, then records what the feed streams into the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from engine.model.synthetic import synthetic_bars
from engine.stores import open_store

REPO = Path(__file__).resolve().parents[2]
KEY = "demo:BTC/USDT:USDT"


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310 - loopback
            return json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def _serve(*args: object, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", *map(str, args)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("postgres_url")


def test_serve_answers_from_the_stored_history_and_records_the_tail(store_target, tmp_path):
    from real_servers import free_port

    # Most of a day of 1m bars for the demo market, ending three hours ago, at a price the simulated market
    # never shows (12,345 vs its own ~60,000): a chart built from them can only have come from the store.
    end = int(time.time()) // 60 * 60 - 3 * 3600
    n = 20 * 60
    stored = synthetic_bars(n, seed=11, start=end - (n - 1) * 60, price=12_345.0)
    with open_store(store_target) as s:
        s.write_bars(KEY, stored)
    port = free_port()
    log = tmp_path / "serve.log"
    proc = _serve("--feed", "demo", "--symbols", "BTC", "--seed", "3", "--speed", "60", "--history-days", "1",
                  "--store", store_target, "--port", port, log=log)
    try:
        deadline = time.monotonic() + 90
        candles = None
        while candles is None or not candles.get("t"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
            candles = _get(port, f"/api/v1/candles?symbol=BTC&timeframe=1m&limit=20000&to={end + 60}")
        # What the user sees before the re-asked last hour is the stored bars, bar for bar.
        t = np.array(candles["t"])
        head = t < end - 2 * 3600
        assert head.sum() >= n - 3 * 60 - 1, (len(t), int(head.sum()))
        i = np.searchsorted(stored.time, t[head])
        np.testing.assert_array_equal(stored.time[i], t[head])
        np.testing.assert_allclose(np.array(candles["c"])[head], stored.close[i])
        np.testing.assert_allclose(np.array(candles["o"])[head], stored.open[i])
        # ... and the tail after it comes from the feed, at its own price, up to the present.
        recent = _get(port, "/api/v1/candles?symbol=BTC&timeframe=1m&limit=10")
        assert recent is not None and recent["t"][-1] > time.time() - 600
        assert abs(recent["c"][-1] - 12_345.0) > 1_000
        # The health endpoint says how much came from the store; what the feed sends is recorded: the store
        # now reaches past the stored end, with no bar twice.
        rec = (_get(port, "/api/v1/health") or {}).get("recording")
        assert rec and rec[0]["from_store"] >= n - 3 * 60 - 1 and not rec[0]["error"], rec
        with open_store(store_target) as s:
            deadline = time.monotonic() + 30
            while (s.last_time(KEY, 60) or 0) < time.time() - 600:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
        with open_store(store_target) as s:
            after = s.read_bars(KEY)
        assert len(after.time) == len(set(after.time.tolist()))
        kept = after.time < end - 2 * 3600
        np.testing.assert_allclose(after.close[kept], stored.close[np.searchsorted(stored.time, after.time[kept])])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path):
    from real_servers import free_port

    url = f"postgresql://trader:pw@127.0.0.1:{free_port()}/none"
    for target, flags in ((url, ["--store", url]), (url, [])):
        config = tmp_path / "config.toml"
        config.write_text(f'[defaults]\nstore = "{target}"\n')
        r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--config", config, *flags],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("liqheat serve: ") and "cannot connect" in r.stderr
        assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr and "pw@" not in r.stderr


def test_a_worker_reads_its_store_from_the_config_file_and_a_bad_one_is_exit_2(tmp_path):
    """The worker reads ``store`` as serve does (flag, else config file) and refuses a bad one the same way,
    before it reaches for the bus."""
    from real_servers import free_port

    url = f"postgresql://trader:pw@127.0.0.1:{free_port()}/none"
    config = tmp_path / "config.toml"
    config.write_text(f'[defaults]\nstore = "{url}"\n')
    r = subprocess.run([sys.executable, "-m", "engine.cli", "worker", "--bus", "redis://127.0.0.1:1/0", "--feed", "demo",
                        "--config", config], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("liqheat worker: ") and "cannot connect" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr and "pw@" not in r.stderr


def test_a_replica_refuses_a_store(tmp_path):
    """``--bus`` makes serve a stateless replica: the workers own the store, so both flags together is a mistake."""
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--bus", "redis://127.0.0.1:1/0",
                        "--store", tmp_path / "h.sqlite"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("liqheat serve: --store") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "h.sqlite").exists()


def test_a_store_url_of_another_kind_is_refused_not_made_into_a_folder(tmp_path):
    """``redis://…`` (or a typo of a scheme) is not a store: one line and exit 2, and no folder named after it."""
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--store", "redis://127.0.0.1:1/0"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("liqheat serve: redis:// is not a store") and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "redis:").exists()
