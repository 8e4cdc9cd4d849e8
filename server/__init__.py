"""liqheat's web face: aiohttp REST + WebSocket + UDF datafeed, the chart page and the overlay plugin."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liqheat")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
