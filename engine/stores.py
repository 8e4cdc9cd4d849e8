"""Open the recorded history a user named: a file path is the SQLite store, ``postgresql://...`` the
PostgreSQL one (engine/store_pg.py). Commands call ``open_store`` so every one of them takes either."""

from __future__ import annotations

import os
import re

from engine.store import Store, StoreError, default_db_path

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_store_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """``None`` -> the default file ($LIQHEAT_DB or the XDG data folder); a URL -> PostgreSQL; else a file.
    $LIQHEAT_DB may hold a URL too."""
    if target is None:
        target = os.environ.get("LIQHEAT_DB") or default_db_path()
    if is_store_url(target):
        from engine.store_pg import PgStore

        return PgStore(str(target), create=create)
    if isinstance(target, str) and _SCHEME.match(target):
        # a URL we do not speak (redis://, sqlite://, a typo) would otherwise become a folder named "redis:"
        raise StoreError(f"{target.split('://')[0]}:// is not a store; give a SQLite file path or postgresql://...")
    return Store(target, create=create)
