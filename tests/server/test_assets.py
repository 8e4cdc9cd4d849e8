"""The pinned chart library install (``python -m server.assets``): checksum enforced, idempotent, and a
tampered copy is noticed. No network: tarballs are built here."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from server import assets


def tarball(script: bytes = b"/* lwc */", license_text: bytes = b"Apache License") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in ((assets.BUILD, script), (assets.LICENSE, license_text), ("package/README.md", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_tarball_with_the_wrong_checksum_is_refused(tmp_path):
    with pytest.raises(assets.AssetError, match="checksum mismatch"):
        assets.install_from_tarball(tarball(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_install_then_detect_tampering_and_skip_when_present(tmp_path, monkeypatch):
    data = tarball()
    monkeypatch.setattr(assets, "INTEGRITY", assets.sri_sha512(data))
    monkeypatch.setattr(assets, "NOTICE", "notice text")
    assets.install_from_tarball(data, tmp_path)
    assert (tmp_path / assets.SCRIPT_NAME).read_bytes() == b"/* lwc */"
    assert (tmp_path / "LICENSE-lightweight-charts").read_bytes() == b"Apache License"
    assert (tmp_path / "NOTICE-lightweight-charts").read_text() == "notice text"
    assert json.loads((tmp_path / assets.STAMP_NAME).read_text())["version"] == assets.VERSION
    assert assets.installed(tmp_path)

    def no_network(workdir):
        raise AssertionError("ensure() must not fetch when the pinned build is present")

    monkeypatch.setattr(assets, "fetch_tarball", no_network)
    assert assets.ensure(tmp_path, quiet=True) == tmp_path / assets.SCRIPT_NAME
    (tmp_path / assets.SCRIPT_NAME).write_bytes(b"/* changed */")
    assert not assets.installed(tmp_path)


def test_the_served_copy_is_the_pinned_version():
    if not assets.installed():
        pytest.skip("run `python -m server.assets` (make assets)")
    head = assets.script_path().read_text()[:300]
    assert f"Lightweight Charts™ v{assets.VERSION}" in head
    notice = (assets.VENDOR / "NOTICE-lightweight-charts").read_text()
    assert "Apache License, Version 2.0" in notice and "attributionLogo" in notice
