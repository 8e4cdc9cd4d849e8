"""Everyday defects of the chart page, tried as a new user would (issue 14), each in real headless
Chromium against a real ``liqheat serve`` on the demo market: a phone-sized screen, a server restart under
an open page, long ranges on a short timeframe, switching markets with the risk form filled, striping,
the largest levels off-screen, a leverage tier with nothing in range. Screenshots: artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = pytest.mark.browser

READY = "() => window.liqheat && window.liqheat.heat && window.liqheat.heat.stats.snapshots > 0 && window.liqheat.heat.stats.draws > 0"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def test_on_a_phone_the_chart_takes_the_width_and_the_panel_follows_below(server_url, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server_url + "/")
        page.wait_for_function(READY, timeout=30_000)
        chart = page.locator("#chart").bounding_box()
        assert chart is not None and chart["width"] >= 360 and chart["height"] >= 300, chart
        # the chart library itself got the width (it drew a time scale across it), and the heatmap drew
        assert page.evaluate("window.liqheat.chart.timeScale().width()") >= 250
        assert page.evaluate("window.liqheat.heat.geom && window.liqheat.heat.geom.segments.length") >= 1
        # the side panel is below the chart, as wide as the screen, reachable by scrolling
        zones = page.locator("#zones").bounding_box()
        assert zones is not None and zones["y"] >= chart["y"] + chart["height"] - 1 and zones["width"] >= 300, zones
        assert page.evaluate("document.documentElement.scrollWidth") <= 392  # no sideways scrolling
        shot(page, "phone-390x844.png")
        assert errors == []
    finally:
        ctx.close()


def test_after_a_server_restart_the_page_goes_live_again(own_server, offline):
    srv = own_server
    page = offline.page()
    page.goto(srv["url"] + "/?timeframe=5m")
    page.wait_for_function(READY, timeout=30_000)
    assert page.evaluate("window.liqheat.heat.stats.transport") == "websocket"
    srv["stop"]()
    page.wait_for_function("() => window.liqheat.heat.ws === null", timeout=15_000)
    page.wait_for_timeout(3_000)  # a few failed reconnects while the server is down
    srv["start"]()
    # back on the socket with a fresh snapshot, and deltas flowing again — not 15-second polling for good
    snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
    page.wait_for_function(
        f"() => window.liqheat.heat.stats.transport === 'websocket' && window.liqheat.heat.ws && window.liqheat.heat.ws.readyState === 1"
        f" && window.liqheat.heat.stats.snapshots > {snaps}", timeout=30_000)
    deltas = page.evaluate("window.liqheat.heat.stats.deltas")
    page.wait_for_function(f"() => window.liqheat.heat.stats.deltas > {deltas}", timeout=20_000)
    assert page.inner_text("#health").strip().lower() == "demo"
    offline.errors[:] = [e for e in offline.errors if "ERR_CONNECTION_REFUSED" not in e and "WebSocket" not in e]
    assert offline.blocked == [] and offline.errors == [], offline.errors


def test_long_ranges_are_not_silently_cut_to_a_week_and_6m_exists(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/?timeframe=5m")
    page.wait_for_function(READY, timeout=30_000)
    labels = page.eval_on_selector_all("#ranges button", "bs => bs.map((b) => b.textContent.trim())")
    assert labels == ["12h", "1d", "3d", "7d", "30d", "90d", "6m", "1y"], labels
    for label, days in (("30d", 30), ("90d", 90), ("6m", 182), ("1y", 365)):
        snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
        page.click(f"#ranges button:text-is('{label}')")
        page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps}", timeout=30_000)
        o = page.evaluate("window.liqheat.heat.options()")
        tf = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400, "1w": 604800}[o["timeframe"]]
        # the request covers the whole range (a coarser timeframe, not the first 2,000 five-minute candles)
        assert o["columns"] * tf >= days * 86400 * 0.98, (label, o)
        assert page.locator(f"#timeframes button.active[data-tf='{o['timeframe']}']").count() == 1
        # and the page says what it shows: this server keeps 7 days of history
        note = page.inner_text("#range-note")
        assert o["timeframe"] in note and "history" in note, note
    shot(page, "range-1y.png")
    # asking for 5m again keeps 5m and says the range is cut to what 2,000 candles hold
    snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
    page.click("button[data-tf='5m']")
    page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps}", timeout=30_000)
    assert page.evaluate("window.liqheat.heat.options().timeframe") == "5m"
    note = page.inner_text("#range-note")
    assert "2,000" in note and "6.9d" in note, note
    assert offline.blocked == [] and offline.errors == []


def test_the_risk_form_follows_the_market(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_selector("#risk-section:not([hidden])", timeout=10_000)
    symbols = page.eval_on_selector_all("#symbol option", "os => os.map((o) => o.value)")
    assert len(symbols) >= 2, symbols
    first = float(page.input_value("#risk-form [name=entry]"))
    page.select_option("#symbol", symbols[1])
    page.wait_for_function(f"() => window.liqheat.heat.options().symbol === {symbols[1]!r} && window.liqheat.heat.stats.snapshots > 1", timeout=30_000)
    price = page.evaluate("window.liqheat.candles.data().at(-1).close")
    page.wait_for_function(f"() => Math.abs(Number(document.querySelector('#risk-form [name=entry]').value) / {price} - 1) < 0.1", timeout=10_000)
    entry = float(page.input_value("#risk-form [name=entry]"))
    assert abs(entry / first - 1) > 0.5  # the demo markets' prices are far apart
    # an old result (and its price line) for the other market goes too
    assert page.inner_text("#risk-out").strip() == ""
    assert offline.blocked == [] and offline.errors == []


STRIPES = """() => {
  // Bins that stand out against both neighbours by more than half, in the live column, where the book
  // is not thin: a smooth book has few; aliasing of the 0.05% level grid on the display bins makes many.
  const h = window.liqheat.heat, B = h.bins, c = h.times.length - 1;
  const v = [];
  for (let b = 0; b < B; b++) v.push(h.long[c * B + b] + h.short[c * B + b]);
  const top = Math.max(...v);
  let spikes = 0, dips = 0, counted = 0;
  for (let b = 1; b < B - 1; b++) {
    const a = v[b - 1], x = v[b], z = v[b + 1];
    if (Math.min(a, x, z) < 0.02 * top) continue;
    counted++;
    if (x > 1.5 * Math.max(a, z)) spikes++;
    if (x < Math.min(a, z) / 1.5) dips++;
  }
  return { spikes, dips, counted };
}"""


def test_no_horizontal_striping_from_the_level_grid(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/?timeframe=5m&tier=all")
    page.wait_for_function(READY, timeout=30_000)
    s = page.evaluate(STRIPES)
    assert s["counted"] >= 40, s
    # measured on the demo markets' live columns at 200-400 bins: all of a level's USD in one bin (the
    # aliasing) flags 27-40% of BTC's bins; split over the bins (the fix) 0-4%, and a real book's own
    # texture up to ~10% (ETH). 3% was at the edge of BTC's texture and failed on a later date's path.
    assert s["spikes"] + s["dips"] <= 0.10 * s["counted"], s
    shot(page, "no-stripes.png")


def test_the_largest_levels_are_on_screen_by_default(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/?timeframe=15m")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#zones tbody tr.long, #zones tbody tr.short').length > 0", timeout=10_000)
    page.wait_for_timeout(300)
    got = page.evaluate("""async () => {
      const {heat, candles, chart} = window.liqheat;
      const symbol = heat.options().symbol;
      const r = await (await fetch('/api/v1/zones?' + new URLSearchParams({ symbol }))).json();
      const H = chart.panes()[0].getHeight();
      const onScreen = (p) => { const y = candles.priceToCoordinate(p); return y != null && y >= 0 && y <= H; };
      const peak = heat.peak();
      // the two largest zones the chart draws (inside the heatmap's price range)
      const lo = heat.edges[0], hi = heat.edges[heat.edges.length - 1];
      const zones = r.zones.filter((z) => z.peak_price >= lo && z.peak_price <= hi).sort((a, b) => b.usd - a.usd).slice(0, 2);
      return { peak: peak && onScreen(peak.price), price: peak && peak.price,
               zones: zones.map((z) => [z.peak_price, onScreen(z.peak_price)]) };
    }""")
    assert got["peak"], got  # the cell at the top of the colour scale
    assert got["zones"] and all(ok for _, ok in got["zones"]), got
    shot(page, "largest-on-screen.png")


def test_a_tier_with_nothing_in_range_says_so(own_server, offline):
    page = offline.page()
    page.goto(own_server["url"] + "/?timeframe=5m&range=43200")
    page.wait_for_function(READY, timeout=30_000)
    hint = page.locator("#empty-hint")
    assert not hint.is_visible()
    empty = None
    for tier in page.eval_on_selector_all("#tier option", "os => os.map((o) => o.value)"):
        if tier == "all":
            continue
        snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
        page.select_option("#tier", tier)
        page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps}", timeout=30_000)
        if page.evaluate("window.liqheat.heat.maxUsd") == 0:
            empty = tier
            break
    assert empty is not None, "every tier had levels in range on the demo market"
    hint.wait_for(state="visible", timeout=5_000)
    text = hint.inner_text()
    assert empty in text and "range" in text, text
    shot(page, "empty-tier-hint.png")
    snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
    page.select_option("#tier", "all")
    page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps}", timeout=30_000)
    hint.wait_for(state="hidden", timeout=5_000)
    assert offline.blocked == [] and offline.errors == []
