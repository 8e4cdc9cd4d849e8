"""The chart page in a real headless Chromium, offline: the overlay draws under the candles (pixel
evidence), follows the timeframe and tier controls, updates live over the WebSocket, and the standalone
module attaches to another page's chart and detaches cleanly. Screenshots land in artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = pytest.mark.browser

READY = "() => window.liqheat && window.liqheat.heat && window.liqheat.heat.stats.snapshots > 0 && window.liqheat.heat.stats.draws > 0"

# Pixels of the main pane (left of the liquidation-map profile) with the heatmap drawn and suppressed,
# and the brightest visible cell with the colour the overlay's ramp says it should have there.
PIXELS = """async ({chartPath, seriesPath, heatPath}) => {
  const get = (p) => p.split('.').reduce((o, k) => o[k], window);
  const chart = get(chartPath), series = get(seriesPath), heat = get(heatPath);
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  await frame();
  const o = heat.options();
  const W = Math.floor(chart.timeScale().width() - (o.profile ? o.profileWidth : 0) - 2);
  const H = Math.floor(chart.panes()[0].getHeight());
  const grab = () => chart.takeScreenshot().getContext('2d').getImageData(0, 0, W, H).data;
  const on = grab();
  heat.setOptions({ opacity: 0 });
  await frame();
  const off = grab();
  heat.setOptions({ opacity: o.opacity });
  await frame();
  let changed = 0;
  for (let i = 0; i < on.length; i += 4) {
    if (Math.abs(on[i] - off[i]) + Math.abs(on[i + 1] - off[i + 1]) + Math.abs(on[i + 2] - off[i + 2]) > 24) changed++;
  }
  // brightest cell on screen, away from the candles' own pixels
  const ts = chart.timeScale();
  let best = null;
  for (let c = 0; c < heat.times.length; c++) {
    const x = ts.timeToCoordinate(heat.times[c]);
    if (x == null || x < 4 || x > W - 4) continue;
    for (let b = 0; b < heat.bins; b++) {
      const v = heat.long[c * heat.bins + b] + heat.short[c * heat.bins + b];
      if (!(v > 0) || (best && v <= best.v)) continue;
      const y0 = series.priceToCoordinate(heat.edges[b + 1]), y1 = series.priceToCoordinate(heat.edges[b]);
      if (y0 == null || y1 == null || y0 < 2 || y1 > H - 2 || y1 - y0 < 1) continue;
      const bar = series.data().find((d) => d.time === heat.times[c]);
      const py = (y0 + y1) / 2, price = series.coordinateToPrice(py);
      if (bar && price >= bar.low * 0.999 && price <= bar.high * 1.001) continue;
      best = { v, c, b, x: Math.round(x), y: Math.round(py) };
    }
  }
  let probe = null;
  if (best) {
    const i = (best.y * W + best.x) * 4;
    const levelOf = (b) => {
      const v = b >= 0 && b < heat.bins ? heat.long[best.c * heat.bins + b] + heat.short[best.c * heat.bins + b] : 0;
      return v > 0 ? Math.max(1, Math.min(255, Math.round(heat.scale.f(v) * 255))) : 0;
    };
    // bins can be under 2 px tall: the probed pixel row may show a neighbour of the brightest bin
    const levels = [levelOf(best.b), levelOf(best.b - 1), levelOf(best.b + 1)];
    probe = { ...best, on: [on[i], on[i + 1], on[i + 2]], off: [off[i], off[i + 1], off[i + 2]], level: levels[0], levels, opacity: o.opacity };
  }
  return { changed, total: on.length / 4, probe };
}"""


def pane_pixels(page, chart="liqheat.chart", series="liqheat.candles", heat="liqheat.heat") -> dict:
    return page.evaluate(PIXELS, {"chartPath": chart, "seriesPath": series, "heatPath": heat})


def expected_colour(page, level: int, opacity: float, background: list[int]) -> list[float]:
    rgba = page.evaluate("async (k) => { const m = await import('/static/liqheat-overlay.js'); return Array.from(m.RAMP.slice(k*4, k*4+4)); }", level)
    a = rgba[3] / 255 * opacity
    return [bg * (1 - a) + c * a for bg, c in zip(background, rgba[:3], strict=True)]


def test_page_loads_offline_and_the_overlay_draws_under_the_candles(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/")
    page.wait_for_function(READY, timeout=30_000)
    stats = page.evaluate("window.liqheat.heat.stats")
    assert stats["transport"] == "websocket" and stats["imageBuilds"] >= 1
    px = pane_pixels(page)
    # a real heatmap covers a good part of the pane, not a stray pixel
    assert px["changed"] > 0.05 * px["total"], px
    probe = px["probe"]
    assert probe is not None, "no visible heatmap cell to probe"
    wants = [expected_colour(page, level, probe["opacity"], probe["off"]) for level in probe["levels"] if level > 0]
    assert any(all(abs(g - w) <= 40 for g, w in zip(probe["on"], want, strict=True)) for want in wants), (probe, wants)
    # candles are still drawn on top: their pixels exist with the overlay on
    candle_px = page.evaluate("""() => {
      const {chart, candles} = window.liqheat;
      const last = candles.data()[candles.data().length - 2];
      const x = Math.round(chart.timeScale().timeToCoordinate(last.time));
      const y = Math.round(candles.priceToCoordinate((last.open + last.close) / 2));
      return Array.from(chart.takeScreenshot().getContext('2d').getImageData(x, y, 1, 1).data);
    }""")
    assert candle_px[:3] in ([233, 237, 247], [255, 77, 109]) or max(candle_px[:3]) > 200, candle_px
    legend = page.inner_text(".liqheat-legend")
    assert "Estimated" in legend and "$" in legend
    assert page.inner_text("#health").strip().lower() in ("demo", "live")
    assert page.locator("#zones tbody tr").count() >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chart-5m.png"))
    assert offline.blocked == [], f"the page tried to leave the machine: {offline.blocked}"
    assert offline.errors == [], offline.errors


def test_live_updates_arrive_over_the_websocket(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/?timeframe=5m")
    page.wait_for_function(READY, timeout=30_000)
    before = page.evaluate("({d: window.liqheat.heat.stats.deltas, c: window.liqheat.heat.stats.columnUpdates,"
                           " t: window.liqheat.candles.data().at(-1).time})")
    page.wait_for_function(
        f"() => window.liqheat.heat.stats.columnUpdates > {before['c']} && window.liqheat.heat.stats.deltas > {before['d']}",
        timeout=30_000,
    )
    # at 60x a new 5m candle opens every few seconds: the chart grows by itself
    page.wait_for_function(f"() => window.liqheat.candles.data().at(-1).time > {before['t']}", timeout=60_000)
    stats = page.evaluate("window.liqheat.heat.stats")
    assert stats["gaps"] == 0 and stats["lastSeq"] > 0
    assert page.evaluate("window.liqheat.heat.times.at(-1)") == page.evaluate("window.liqheat.candles.data().at(-1).time")
    assert offline.blocked == [] and offline.errors == []


def test_timeframe_and_tier_controls_change_the_overlay(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/")
    page.wait_for_function(READY, timeout=30_000)
    all_max = page.evaluate("window.liqheat.heat.maxUsd")
    snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
    page.click("button[data-tf='1h']")
    page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps} && window.liqheat.heat.options().timeframe === '1h'", timeout=30_000)
    times = page.evaluate("window.liqheat.heat.times")
    assert len(times) >= 20 and {b - a for a, b in zip(times, times[1:], strict=False)} == {3600}
    assert page.evaluate("window.liqheat.candles.data().at(-1).time") == times[-1]
    hour = pane_pixels(page)
    assert hour["changed"] > 0.05 * hour["total"]
    page.screenshot(path=str(SCREENSHOTS / "chart-1h.png"))

    snaps = page.evaluate("window.liqheat.heat.stats.snapshots")
    page.select_option("#tier", "100x")
    page.wait_for_function(f"() => window.liqheat.heat.stats.snapshots > {snaps} && window.liqheat.heat.tiers.join() === '100x'", timeout=30_000)
    tier_max = page.evaluate("window.liqheat.heat.maxUsd")
    hour_all = page.evaluate("window.liqheat.heat.options().tier")
    assert hour_all == "100x"
    assert 0 < tier_max < all_max * 5  # one tier of the ladder, on the absolute USD scale
    legend = page.inner_text(".liqheat-legend")
    assert "100x" in legend
    page.select_option("#scale", "log")
    page.wait_for_function("() => window.liqheat.heat.options().scale === 'log'")
    page.screenshot(path=str(SCREENSHOTS / "chart-1h-100x-log.png"))
    assert offline.blocked == [] and offline.errors == []


def test_hover_shows_price_band_usd_and_tier_mix(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/")
    page.wait_for_function(READY, timeout=30_000)
    probe = pane_pixels(page)["probe"]
    box = page.locator("#chart").bounding_box()
    page.mouse.move(box["x"] + probe["x"], box["y"] + probe["y"])
    tip = page.locator(".liqheat-tooltip")
    tip.wait_for(state="visible", timeout=5_000)
    page.wait_for_function("() => /\\d+x \\d+%/.test(document.querySelector('.liqheat-tooltip').innerText)", timeout=10_000)
    text = tip.inner_text()
    assert "longs" in text and "shorts" in text and "$" in text and "–" in text and "estimated" in text
    page.screenshot(path=str(SCREENSHOTS / "chart-hover.png"))
    assert offline.blocked == [] and offline.errors == []


def test_the_overlay_module_attaches_to_another_pages_chart_and_detaches(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/example")
    page.wait_for_function("() => window.example && window.example.heat && window.example.heat.stats.snapshots > 0 && window.example.heat.stats.draws > 0", timeout=30_000)
    attached = pane_pixels(page, "example.chart", "example.series", "example.heat")
    assert attached["changed"] > 0.05 * attached["total"]
    shot = """() => { const {chart} = window.example; const c = chart.takeScreenshot();
                      return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0 && i % 97 === 0)); }"""
    with_overlay = page.evaluate(shot)
    page.click("#toggle")
    page.wait_for_function("() => window.example.heat === null")
    page.wait_for_timeout(100)
    without = page.evaluate(shot)
    differ = sum(1 for a, b in zip(with_overlay, without, strict=True) if abs(a - b) > 12)
    assert differ > 0.05 * len(without), differ
    assert page.locator(".liqheat-legend").count() == 0  # its DOM went with it
    page.click("#toggle")
    page.wait_for_function("() => window.example.heat && window.example.heat.stats.draws > 0", timeout=30_000)
    assert offline.blocked == [] and offline.errors == []


def test_position_risk_form_marks_the_liquidation_price(server_url, offline):
    page = offline.page()
    page.goto(server_url + "/")
    page.wait_for_function(READY, timeout=30_000)
    page.wait_for_selector("#risk-section:not([hidden])", timeout=10_000)
    price = page.evaluate("window.liqheat.candles.data().at(-1).close")
    page.fill("#risk-form [name=entry]", str(round(price)))
    page.fill("#risk-form [name=leverage]", "20")
    page.click("#risk-form button")
    page.wait_for_selector("#risk-out dl", timeout=10_000)
    text = page.inner_text("#risk-out")
    assert "liquidation price" in text and "reach it within" in text and "estimated" in text
    lines = page.evaluate("window.liqheat.candles.priceLines().map((l) => l.options())")
    liq = [line for line in lines if "liq." in line["title"]]
    assert len(liq) == 1 and liq[0]["price"] < price  # a long is liquidated below its entry
    assert offline.blocked == [] and offline.errors == []
