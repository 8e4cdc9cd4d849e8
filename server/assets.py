"""Install the pinned TradingView Lightweight Charts build the chart page needs (``python -m server.assets``).

The page must work with no internet, so the library is served from ``server/static/vendor/``. It is fetched
once through the npm client (``npm pack``: whatever registry npm is configured for, no host names here),
checked against the sha512 integrity pinned below, and only the standalone browser build and its licence
are kept. Running it again when the files are present and intact does nothing (a few milliseconds).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "lightweight-charts"
VERSION = "5.2.1"
# `npm view lightweight-charts@5.2.1 dist.integrity`
INTEGRITY = "sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ=="
BUILD = "package/dist/lightweight-charts.standalone.production.js"
LICENSE = "package/LICENSE"

VENDOR = Path(__file__).resolve().parent / "static" / "vendor"
SCRIPT_NAME = "lightweight-charts.standalone.production.js"
STAMP_NAME = "lightweight-charts.json"

# Apache-2.0 section 4 asks redistributors to pass on the licence and any NOTICE, and to say what they
# changed. The npm tarball has no NOTICE file, so liqheat writes its own attribution next to the copy.
NOTICE = f"""TradingView Lightweight Charts(TM) {VERSION}
Copyright (c) TradingView, Inc. https://www.tradingview.com/
Licensed under the Apache License, Version 2.0 (see LICENSE-lightweight-charts in this folder).

liqheat ships the unmodified browser build `dist/lightweight-charts.standalone.production.js` of the npm
package `{PACKAGE}@{VERSION}` (integrity {INTEGRITY}).
It is served to the browser as-is; liqheat's own code (the liquidation heatmap overlay) is separate and
attaches to the library through its public plugin API.

The chart keeps the library's attribution logo on (the `attributionLogo` layout option), which links to
TradingView as the library's licence terms ask.
"""


class AssetError(RuntimeError):
    """The library could not be installed (one line for the user)."""


def sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def script_path() -> Path:
    return VENDOR / SCRIPT_NAME


def installed(vendor: Path = VENDOR) -> bool:
    """True when the pinned build is on disk and matches the hash recorded when it was extracted."""
    stamp = vendor / STAMP_NAME
    script = vendor / SCRIPT_NAME
    if not (stamp.is_file() and script.is_file() and (vendor / "LICENSE-lightweight-charts").is_file()):
        return False
    notice = vendor / "NOTICE-lightweight-charts"
    if not notice.is_file() or notice.read_text() != NOTICE:
        return False
    try:
        meta = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("version") != VERSION or meta.get("integrity") != INTEGRITY:
        return False
    return bool(meta.get("script_sha512") == sri_sha512(script.read_bytes()))


def fetch_tarball(workdir: Path) -> bytes:
    """``npm pack`` the pinned version into ``workdir`` and return the tarball's bytes."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError("npm is not installed; install Node.js/npm (Debian: apt-get install npm) and retry")
    proc = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--silent", "--pack-destination", str(workdir)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(f"npm pack {PACKAGE}@{VERSION} failed: {last}")
    tgz = sorted(workdir.glob("*.tgz"))
    if len(tgz) != 1:
        raise AssetError(f"npm pack {PACKAGE}@{VERSION} produced no tarball")
    return tgz[0].read_bytes()


def install_from_tarball(data: bytes, vendor: Path = VENDOR) -> None:
    got = sri_sha512(data)
    if got != INTEGRITY:
        raise AssetError(f"{PACKAGE}@{VERSION} tarball checksum mismatch: got {got[:24]}..., refusing to install")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        wanted = {}
        for name in (BUILD, LICENSE):
            member = members.get(name)
            if member is None or not member.isfile():
                raise AssetError(f"{PACKAGE}@{VERSION} tarball has no {name}")
            fh = tar.extractfile(member)
            assert fh is not None
            wanted[name] = fh.read()
    vendor.mkdir(parents=True, exist_ok=True)
    script = wanted[BUILD]
    # Write through temporary names so a half-written file never looks installed.
    for fname, content in (
        (SCRIPT_NAME, script),
        ("LICENSE-lightweight-charts", wanted[LICENSE]),
        ("NOTICE-lightweight-charts", NOTICE.encode()),
        (
            STAMP_NAME,
            json.dumps(
                {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY, "script_sha512": sri_sha512(script)},
                indent=2,
            ).encode(),
        ),
    ):
        tmp = vendor / (fname + ".part")
        tmp.write_bytes(content)
        tmp.replace(vendor / fname)


def ensure(vendor: Path = VENDOR, quiet: bool = False) -> Path:
    """Install the library unless the exact pinned build is already there. Returns the script path."""
    if installed(vendor):
        if not quiet:
            print(f"{PACKAGE} {VERSION} already installed in {vendor}")
        return vendor / SCRIPT_NAME
    with tempfile.TemporaryDirectory(prefix="liqheat-assets-") as tmp:
        data = fetch_tarball(Path(tmp))
    install_from_tarball(data, vendor)
    if not quiet:
        print(f"installed {PACKAGE} {VERSION} (checksum verified) into {vendor}")
    return vendor / SCRIPT_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.assets", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the pinned build is installed")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        ok = installed()
        print(f"{PACKAGE} {VERSION}: {'installed' if ok else 'missing (run python -m server.assets)'}")
        return 0 if ok else 1
    try:
        ensure(quiet=args.quiet)
    except AssetError as exc:
        print(f"server.assets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
