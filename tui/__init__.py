"""The terminal dashboard (``liqheat tui``): a Textual app on the engine service or a running server."""
