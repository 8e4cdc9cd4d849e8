"""The batch commands on a PostgreSQL store, as a user runs them: ``import``, ``record`` and ``export`` with
``--store postgresql://...`` against a real server."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.formats import write_bars_file
from engine.model.synthetic import synthetic_bars
from engine.stores import open_store

REPO = Path(__file__).resolve().parents[2]


def liqheat(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_import_twice_then_export_from_postgres(postgres_url, tmp_path):
    bars = synthetic_bars(3 * 1440, seed=41)
    src = write_bars_file(tmp_path / "btc.csv", bars)
    args = ["import", "--store", postgres_url, "--market", "okx:BTC/USDT:USDT", "--bars", src]
    first, again = liqheat(*args), liqheat(*args)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert f"{len(bars)} new" in first.stderr and f"0 new, {len(bars)} already stored" in again.stderr
    out = tmp_path / "realised.csv"
    done = liqheat("export", "--store", postgres_url, "--market", "okx:BTC/USDT:USDT", "--what", "realised", "--out", out)
    assert done.returncode == 0, done.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["time"]) for r in rows] == bars.time.tolist()
    # the same export from a SQLite copy of the same bars gives the same file
    db = tmp_path / "same.sqlite"
    assert liqheat("import", "--db", db, "--market", "okx:BTC/USDT:USDT", "--bars", src).returncode == 0
    out2 = tmp_path / "realised_sqlite.csv"
    assert liqheat("export", "--store", db, "--market", "okx:BTC/USDT:USDT", "--what", "realised", "--out", out2).returncode == 0
    assert out.read_text() == out2.read_text()


def test_record_into_postgres_and_stop_on_sigterm(postgres_url, tmp_path):
    bars = synthetic_bars(2000, seed=42)
    src = write_bars_file(tmp_path / "eth.csv.gz", bars)
    log = tmp_path / "rec.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "record", "--exchange", f"file:{src}", "--store", postgres_url,
             "--speed", "60000", "--flush", "0.05"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        with open_store(postgres_url) as s:
            deadline = time.monotonic() + 60
            while s.count_bars("file:eth") < 2000:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_store(postgres_url) as s:
        got = s.read_bars("file:eth")
        np.testing.assert_array_equal(got.time, bars.time)
        np.testing.assert_array_equal(got.close, bars.close)
        assert s.gaps() == []


def test_a_store_url_that_does_not_answer_is_one_line(tmp_path):
    from real_servers import free_port

    url = f"postgresql://trader:pw@127.0.0.1:{free_port()}/none"
    src = write_bars_file(tmp_path / "x.csv", synthetic_bars(10))
    r = liqheat("import", "--store", url, "--market", "okx:BTC/USDT:USDT", "--bars", src)
    assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr and "pw@" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
