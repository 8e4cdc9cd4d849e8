"""Typed application state (aiohttp ``AppKey``s), shared by the handlers without import cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import ServerConfig

if TYPE_CHECKING:
    from .live import LiveHub
    from .markets import Markets

CONFIG = web.AppKey("config", ServerConfig)
MARKETS: web.AppKey[Markets] = web.AppKey("markets")
LIVE: web.AppKey[LiveHub] = web.AppKey("live")
STARTED_AT = web.AppKey("started_at", float)
