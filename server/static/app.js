// The chart page: candles + the liqheat overlay (heatmap under the candles, liquidation-map profile
// beside the price scale), realised liquidations in a lower pane, zones, market stats, model parameters.
import { attachLiquidationHeatmap, formatUsd } from "/static/liqheat-overlay.js";

const LWC = window.LightweightCharts;
const TIMEFRAMES = ["5m", "15m", "1h", "4h", "1d", "1w"];
const TF_SECONDS = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400, "1w": 604800 };
// The map beside the price scale takes less of a phone's width.
const PROFILE_WIDTH = window.matchMedia("(max-width: 600px)").matches ? 64 : 110;
// The server sends at most this many candles/columns per view.
const MAX_COLUMNS = 2000;
// Single range buttons, CoinGlass-style; a range too long for the timeframe's 2,000 candles raises it.
const RANGES = [["12h", 43200], ["1d", 86400], ["3d", 259200], ["7d", 604800], ["30d", 2592000],
                ["90d", 7776000], ["6m", 15724800], ["1y", 31536000]];
const $ = (id) => document.getElementById(id);

// GET a JSON answer; when the server is busy (429/503 with Retry-After) wait as it says and ask again,
// a few times, before handing back its answer (an {error}) like any other.
async function getJSON(url, tries = 3) {
  for (let i = 0; ; i++) {
    const r = await fetch(url);
    const after = Number(r.headers.get("Retry-After"));
    if ((r.status === 429 || r.status === 503) && after > 0 && i < tries) {
      await new Promise((done) => setTimeout(done, Math.min(30, after) * 1000));
      continue;
    }
    return r.json();
  }
}
const params = new URLSearchParams(location.search);

const state = {
  symbols: [],
  symbol: params.get("symbol") || null,
  timeframe: params.get("timeframe") || "5m",
  tier: params.get("tier") || "all",
  range: Number(params.get("range") || 86400),
  scale: params.get("scale") || "sqrt",
  threshold: Number(params.get("threshold") || 0),
  zones: [],
  weight: params.get("weight") === "usd" ? "usd" : "touch", // zones ranked by USD x 4h touch, or raw USD
  raisedFrom: null, // the timeframe a range button replaced (it could not cover the range)
  riskSymbol: null, // the market the risk form's entry belongs to
};

function columnsFor(range, tf) {
  return Math.max(20, Math.min(MAX_COLUMNS, Math.round(range / TF_SECONDS[tf])));
}
function fits(range, tf) {
  return range / TF_SECONDS[tf] <= MAX_COLUMNS;
}
function rangeLabel(range) {
  const r = RANGES.find(([, v]) => v === range);
  return r ? r[0] : spanText(range);
}
function spanText(seconds) {
  const d = seconds / 86400;
  return d >= 1 ? `${d.toFixed(d >= 10 ? 0 : 1)}d` : `${Math.round(seconds / 3600)}h`;
}

const chart = LWC.createChart($("chart"), {
  autoSize: true,
  layout: {
    background: { type: "solid", color: "#0d0f17" },
    textColor: "#a9afc3",
    fontSize: 11,
    attributionLogo: true, // TradingView's attribution, as the library's licence terms ask
    panes: { separatorColor: "#252a3a", separatorHoverColor: "#394060", enableResize: true },
  },
  grid: { vertLines: { color: "rgba(255,255,255,0.04)" }, horzLines: { color: "rgba(255,255,255,0.05)" } },
  rightPriceScale: { borderColor: "#252a3a", scaleMargins: { top: 0.06, bottom: 0.06 } },
  timeScale: { borderColor: "#252a3a", timeVisible: true, secondsVisible: false, rightOffset: 22 },
  crosshair: { mode: LWC.CrosshairMode.Normal },
});
const candles = chart.addSeries(LWC.CandlestickSeries, {
  upColor: "#e9edf7", downColor: "#ff4d6d", borderUpColor: "#e9edf7", borderDownColor: "#ff4d6d",
  wickUpColor: "#c9cfdf", wickDownColor: "#ff4d6d", priceLineColor: "#fde725",
});
const realisedShort = chart.addSeries(LWC.HistogramSeries, {
  color: "rgba(82, 209, 192, 0.85)", priceFormat: { type: "custom", formatter: (v) => formatUsd(Math.abs(v)) },
  lastValueVisible: false, priceLineVisible: false, title: "shorts liq. (est.)",
}, 1);
const realisedLong = chart.addSeries(LWC.HistogramSeries, {
  color: "rgba(255, 111, 138, 0.85)", priceFormat: { type: "custom", formatter: (v) => formatUsd(Math.abs(v)) },
  lastValueVisible: false, priceLineVisible: false, title: "longs liq. (est.)",
}, 1);
chart.panes()[1].setHeight(110);

// Keep the newest candle clear of the profile drawn beside the price scale.
function fitRightOffset() {
  const spacing = chart.timeScale().options().barSpacing;
  const want = Math.ceil((PROFILE_WIDTH + 24) / spacing);
  if (Math.abs(chart.timeScale().options().rightOffset - want) >= 1) chart.timeScale().applyOptions({ rightOffset: want });
}

let heat = null;
const realisedRows = new Map();

function setRealised(t, longUsd, shortUsd) {
  realisedRows.set(t, [longUsd, shortUsd]);
}
function renderRealised() {
  const times = [...realisedRows.keys()].sort((a, b) => a - b);
  realisedShort.setData(times.map((t) => ({ time: t, value: realisedRows.get(t)[1] })));
  realisedLong.setData(times.map((t) => ({ time: t, value: -realisedRows.get(t)[0] })));
}

function healthBadge(h) {
  const el = $("health");
  if (!h) return;
  const state = typeof h === "string" ? h : h.state;
  el.className = "badge " + state.split(":")[0];
  // the recent days are in, the rest of the history is still loading behind them
  const backfill = typeof h === "object" && h.history && h.history.phase === "recent";
  el.textContent = backfill ? `${state} · backfilling ${h.history.days}/${h.history.wanted_days}d` : state;
  el.title = typeof h === "string" ? h : `${h.state}${h.reason ? ": " + h.reason : ""} (updated ${Math.round(h.age_s)}s ago)`;
}

function ageText(s) {
  if (s == null) return "–";
  return s < 3600 ? `${Math.round(s / 60)}m` : s < 172800 ? `${(s / 3600).toFixed(s < 36000 ? 1 : 0)}h` : `${Math.round(s / 86400)}d`;
}

// A zone's price band, short enough for the table: 80.62–82.48K
function rangeText(lo, hi) {
  if (lo >= 10000) return `${(lo / 1000).toFixed(2)}–${(hi / 1000).toFixed(2)}K`;
  return `${fmtPrice(lo)}–${fmtPrice(hi)}`;
}

function renderZones() {
  const body = $("zones").querySelector("tbody");
  body.innerHTML = "";
  for (const z of state.zones.slice(0, 12)) {
    const tr = document.createElement("tr");
    tr.className = z.side;
    if (z.id != null) tr.dataset.id = z.id;
    const risk = z.risk_usd_4h != null ? formatUsd(z.risk_usd_4h) : "–";
    const frames = (z.confluence_frames || []).join(", ");
    tr.innerHTML = `<td>${z.side}</td><td title="${fmtPrice(z.price_low)}–${fmtPrice(z.price_high)}">${rangeText(z.price_low, z.price_high)}</td>` +
      `<td>${formatUsd(z.usd)}</td><td class="${state.weight === "touch" ? "" : "dim"}">${risk}</td>` +
      `<td class="grade-${z.grade}" title="${z.grade}">${z.grade === "elevated" ? "elev." : z.grade}</td>` +
      `<td>${z.touch_4h != null ? pctText(z.touch_4h) : "–"}</td>` +
      `<td title="${frames ? "agrees on " + escapeText(frames) : "not computed yet"}">${z.confluence ? z.confluence + "/3" : "–"}</td>` +
      `<td title="first seen ${z.first_seen ? new Date(z.first_seen * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC (market time)" : "–"}">${ageText(z.persistence_s)}</td>` +
      `<td>${z.distance_pct >= 0 ? "+" : ""}${z.distance_pct.toFixed(1)}%</td>`;
    tr.title = (z.touch_1h != null ? `touch 1h ${pctText(z.touch_1h)}, 4h ${pctText(z.touch_4h)}, 24h ${pctText(z.touch_24h)}; ` : "") + `peak ${fmtPrice(z.peak_price)}, ${z.percentile}th percentile` +
      (z.share_of_daily_volume != null ? `, ${(z.share_of_daily_volume * 100).toFixed(2)}% of daily volume` : "");
    body.appendChild(tr);
  }
  if (!state.zones.length) body.innerHTML = `<tr><td colspan="9" style="color:#8a90a6">no zones yet</td></tr>`;
  // keep the two largest zones in view (the price scale's autoscale), as long as they are near
  if (heat) heat.setOptions({ focusPrices: state.zones.slice().sort((a, b) => b.usd - a.usd).slice(0, 2).map((z) => z.peak_price) });
}

function escapeText(s) {
  const d = document.createElement("div");
  d.textContent = String(s);
  return d.innerHTML;
}

function fmtPrice(p) {
  const a = Math.abs(p);
  const d = a >= 1000 ? 0 : a >= 10 ? 2 : 4;
  return p.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

function pctText(p) {
  return p < 0.01 ? "<1%" : Math.round(p * 100) + "%";
}

function renderModel(m) {
  if (!m) return;
  const tiers = (m.tiers || []).map((t) => `<tr><td>${t.leverage}x</td><td>${Math.round(t.weight * 100)}%</td><td>mmr ${(t.mmr * 100).toFixed(2)}%</td><td>${t.half_life_hours != null ? "½-life " + t.half_life_hours + "h" : "no decay"}</td></tr>`).join("");
  const rows = [
    ["ladder", m.ladder], ["seed mode", m.seed_mode], ["margin table", m.margin_table], ["contract", m.contract],
    ["entry anchors", (m.entry_anchors || []).join(", ") + " (weights " + (m.entry_weights || []).join(", ") + ")"],
    ["side tilt", m.side_tilt], ["volume proxy", m.volume_proxy_fraction], ["decay", String(m.decay)],
    ["shrink on OI drop", String(m.shrink_on_oi_drop)], ["wick clear", m.wick_clear], ["resolution", m.resolution],
    ["fitted on", m.fitted_on],
  ].filter(([, v]) => v !== undefined);
  $("model-body").innerHTML = `<table>${tiers}</table><table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${escapeText(v)}</td></tr>`).join("")}</table>` +
    `<div id="accuracy"></div>` +
    `<p style="color:#8a90a6">Estimated from open interest / volume with the ladder above. See the README's model section.</p>`;
  refreshAccuracy();
}

function addEvent(html, cls) {
  const ul = $("events");
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.innerHTML = html;
  ul.prepend(li);
  while (ul.children.length > 60) ul.lastChild.remove();
}
function liquidationLine(e) {
  const t = new Date(e.time_ms).toISOString().slice(11, 19);
  // Bybit/OKX print bankruptcy prices: the line shows the estimated liquidation price and says so.
  const est = e.price_kind === "bankruptcy"
    ? ` <span title="estimated liquidation price; the exchange printed the bankruptcy price ${fmtPrice(e.reported_price)}">est.</span>`
    : "";
  return `${t} <span class="${e.side}">${e.side}</span> ${formatUsd(e.usd)} @ ${fmtPrice(e.price)}${est}`;
}

// The REST zones add the chance price reaches each zone within 24h (touch model).
let zonesTimer = null;
function refreshZones() {
  clearTimeout(zonesTimer);
  zonesTimer = setTimeout(async () => {
    try {
      const r = await getJSON("/api/v1/zones?" + new URLSearchParams({ symbol: state.symbol, weight: state.weight }));
      if (!r.error && r.symbol === state.symbol && (r.weight || "touch") === state.weight) { state.zones = r.zones; state.zonesWeight = r.weight; renderZones(); }
    } catch (e) { /* keep the zones we have */ }
  }, 250);
}

async function refreshStats() {
  if (!state.symbol) return;
  try {
    const m = await getJSON("/api/v1/market?" + new URLSearchParams({ symbol: state.symbol }));
    if (m.error) return;
    const f = m.funding || {};
    const rows = [
      ["price", m.price != null ? fmtPrice(m.price) : "–"],
      ["open interest", m.oi_usd != null ? formatUsd(m.oi_usd) : "unknown"],
      ["24h volume (avg)", m.daily_volume_usd != null ? formatUsd(m.daily_volume_usd) : "–"],
      ["funding", f.rate != null ? (f.rate * 100).toFixed(4) + "% / " + f.interval_hours + "h" : "–"],
      ["seed", m.seed_mode],
      ["exchange", m.exchange],
    ];
    $("stats").innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
    healthBadge(m.health);
  } catch (e) { /* next refresh */ }
}

async function loadLiquidations() {
  $("events").innerHTML = "";
  try {
    const a = await getJSON("/api/v1/alerts?" + new URLSearchParams({ symbol: state.symbol, limit: 20 }));
    for (const x of a.alerts || []) addEvent(`⚠ ${escapeText(x.message)}`, "alert");
  } catch (e) { /* alerts also arrive live */ }
  try {
    const r = await getJSON("/api/v1/liquidations?" + new URLSearchParams({ symbol: state.symbol, limit: 40 }));
    $("liq-source").textContent = r.source ? `(${r.source})` : "";
    for (const e of r.events || []) addEvent(liquidationLine(e));
  } catch (e) { /* live events still arrive */ }
}

function updateUrl() {
  const q = new URLSearchParams({ symbol: state.symbol, timeframe: state.timeframe, tier: state.tier, range: state.range, scale: state.scale });
  if (state.threshold > 0) q.set("threshold", state.threshold);
  if (state.weight === "usd") q.set("weight", "usd");
  history.replaceState(null, "", "?" + q);
}

function applyView() {
  updateUrl();
  const opts = { symbol: state.symbol, timeframe: state.timeframe, tier: state.tier, scale: state.scale,
                 threshold: state.threshold, columns: columnsFor(state.range, state.timeframe) };
  rangeNote(null);
  if (!heat) {
    heat = attachLiquidationHeatmap(chart, candles, { ...opts, candles: true, bins: 400, profileWidth: PROFILE_WIDTH,
                                                      autoscaleMargin: 0.03, autoscaleLargest: 0.25, mapWeight: state.weight });
    heat.on("snapshot", onSnapshot);
    heat.on("realised", (r) => { setRealised(r.time, r.long_usd, r.short_usd); renderRealised(); });
    heat.on("zones", () => refreshZones()); // the REST zones are the same plus touch probabilities
    heat.on("health", (h) => healthBadge(h));
    heat.on("status", (s) => { if (!["live", "demo", "replay", "delayed", "stale"].includes(s)) healthBadge(s); });
    heat.on("column", () => emptyHint());
    heat.on("liquidation", (e) => addEvent(liquidationLine(e)));
    heat.on("alert", (a) => addEvent(`⚠ ${escapeText(a.message || a.kind)}`, "alert"));
    window.liqheat.heat = heat;
  } else {
    heat.setOptions(opts);
  }
}

function onSnapshot(s) {
  if (!s.candles) return;
  realisedRows.clear();
  const r = s.realised;
  for (let i = 0; i < r.t.length; i++) setRealised(r.t[i], r.long_usd[i], r.short_usd[i]);
  renderRealised();
  // the snapshot's zones are in risk-weighted order; by raw USD the REST answer that follows replaces them
  state.zones = (s.zones || []).slice();
  if (state.weight === "usd") state.zones.sort((a, b) => b.usd - a.usd);
  renderZones();
  refreshZones();
  renderModel(s.model);
  healthBadge(s.health);
  rangeNote(s);
  emptyHint();
  riskFollowsMarket(s);
  if (s.reason !== "range" && s.reason !== "overflow") {
    chart.timeScale().fitContent();
    fitRightOffset();
  }
  window.liqheat.snapshots = (window.liqheat.snapshots || 0) + 1;
}

function fillSelect(sel, items, value) {
  sel.innerHTML = items.map(([v, label]) => `<option value="${v}"${v === value ? " selected" : ""}>${label}</option>`).join("");
}

function marketsFor(exchange) {
  return state.symbols.filter((m) => !exchange || m.exchange === exchange);
}

function renderControls() {
  const current = state.symbols.find((m) => m.key === state.symbol);
  const exchanges = [...new Set(state.symbols.map((m) => m.exchange))];
  fillSelect($("exchange"), exchanges.map((e) => [e, e]), current ? current.exchange : exchanges[0]);
  fillSelect($("symbol"), marketsFor($("exchange").value).map((m) => [m.key, m.symbol]), state.symbol);
  fillSelect($("tier"), [["all", "all tiers"], ...(current ? current.tiers : []).map((t) => [t, t])], state.tier);
  const tfs = $("timeframes");
  tfs.innerHTML = "";
  for (const tf of TIMEFRAMES) {
    const b = document.createElement("button");
    b.textContent = tf;
    b.dataset.tf = tf;
    if (tf === state.timeframe) b.className = "active";
    b.onclick = () => { state.timeframe = tf; state.raisedFrom = null; renderControls(); applyView(); };
    tfs.appendChild(b);
  }
  const rs = $("ranges");
  rs.innerHTML = "";
  for (const [label, seconds] of RANGES) {
    const b = document.createElement("button");
    b.textContent = label;
    b.dataset.range = seconds;
    if (seconds === state.range) b.className = "active";
    b.onclick = () => {
      state.range = seconds;
      state.raisedFrom = null;
      if (!fits(seconds, state.timeframe)) {
        // the whole range, on the finest timeframe that holds it, rather than its last 2,000 candles
        state.raisedFrom = state.timeframe;
        state.timeframe = TIMEFRAMES.find((tf) => fits(seconds, tf)) || TIMEFRAMES[TIMEFRAMES.length - 1];
      }
      renderControls();
      applyView();
    };
    rs.appendChild(b);
  }
  $("scale").value = state.scale;
  $("threshold").value = String(state.threshold);
  $("threshold-out").textContent = Math.round(state.threshold * 100) + "%";
}

async function main() {
  window.liqheat = { chart, candles, realisedLong, realisedShort, heat: null, ready: false };
  const res = await getJSON("/api/v1/symbols");
  state.symbols = res.symbols;
  const found = state.symbols.find((m) => m.key === state.symbol || m.coin === state.symbol || m.symbol === state.symbol);
  state.symbol = found ? found.key : state.symbols.length ? state.symbols[0].key : null;
  if (!state.symbol) { healthBadge("error: no markets"); return; }
  renderControls();
  $("exchange").onchange = () => { state.symbol = marketsFor($("exchange").value)[0].key; state.tier = "all"; renderControls(); switchMarket(); };
  $("symbol").onchange = () => { state.symbol = $("symbol").value; state.tier = "all"; renderControls(); switchMarket(); };
  $("tier").onchange = () => { state.tier = $("tier").value; applyView(); };
  $("risk-weighted").checked = state.weight === "touch";
  // One risk-weighted view: the zones' order and the map beside the price scale (USD x 4h touch), or raw USD.
  $("risk-weighted").onchange = () => {
    state.weight = $("risk-weighted").checked ? "touch" : "usd";
    updateUrl();
    refreshZones();
    if (heat) heat.setOptions({ mapWeight: state.weight });
  };
  $("threshold").oninput = () => {
    state.threshold = Number($("threshold").value);
    $("threshold-out").textContent = Math.round(state.threshold * 100) + "%";
    heat.setOptions({ threshold: state.threshold });
    updateUrl();
  };
  $("scale").onchange = () => { state.scale = $("scale").value; applyView(); };
  chart.timeScale().subscribeVisibleLogicalRangeChange(() => fitRightOffset());
  switchMarket();
  setInterval(refreshStats, 15000);
  setInterval(refreshSessions, 20000);
  setInterval(tickFunding, 1000);
  setupRisk();
  window.liqheat.ready = true;
}

// Say what the chart shows when it is not the range asked for: a timeframe raised to cover it, the
// 2,000-candle cap, or a history shorter than the range.
function rangeNote(s) {
  const notes = [];
  const tf = state.timeframe, want = rangeLabel(state.range);
  if (state.raisedFrom) {
    const n = Math.round(state.range / TF_SECONDS[state.raisedFrom]).toLocaleString("en-US");
    notes.push(`${want} at ${state.raisedFrom} would need ${n} candles (max ${MAX_COLUMNS.toLocaleString("en-US")}): showing ${tf}`);
  } else if (!fits(state.range, tf)) {
    const better = TIMEFRAMES.find((t) => fits(state.range, t));
    notes.push(`${tf} shows at most ${MAX_COLUMNS.toLocaleString("en-US")} candles (${spanText(MAX_COLUMNS * TF_SECONDS[tf])}) of the ${want} range` +
               (better ? ` — pick ${better} for all of it` : ""));
  }
  const hist = s && s.health ? s.health.history : null;
  if (hist && hist.phase === "recent") {
    notes.push(`backfilling: ${hist.days} of ${hist.wanted_days} days of history loaded so far, the chart fills in when the rest arrives`);
  }
  const t = s && s.candles ? s.candles.t : null;
  if (t && t.length) {
    const span = t[t.length - 1] - t[0] + TF_SECONDS[tf];
    const asked = Math.min(state.range, MAX_COLUMNS * TF_SECONDS[tf]);
    if (span < 0.95 * asked) {
      const since = new Date(t[0] * 1000).toISOString().slice(0, 16).replace("T", " ");
      notes.push(`the server's history holds ${spanText(span)} of ${tf} candles (since ${since} UTC), not all of ${want}`);
    }
  }
  const el = $("range-note");
  el.textContent = notes.join(" · ");
  el.hidden = notes.length === 0;
}

// A blank chart says why: nothing of this tier inside the chart's price range.
function emptyHint() {
  const el = $("empty-hint");
  if (!heat || !heat.edges || !heat.times.length) { el.hidden = true; return; }
  if (heat.maxUsd > 0) { el.hidden = true; return; }
  const lo = heat.edges[0], hi = heat.edges[heat.edges.length - 1];
  const tier = state.tier === "all" ? "" : state.tier + " ";
  const lev = Number(String(state.tier).replace(/x$/, ""));
  const far = lev > 0 ? ` ${state.tier} positions are liquidated about ${(100 / lev).toFixed(0)}% from their entry.` : "";
  el.innerHTML = `No estimated ${escapeText(tier)}liquidation levels inside this chart's price range ` +
    `(${fmtPrice(lo)}–${fmtPrice(hi)}) over the last ${escapeText(rangeLabel(state.range))}.${escapeText(far)}<br>` +
    `<span style="color:#8a90a6">Pick "all tiers" or another tier, or a longer range.</span>`;
  el.hidden = false;
}

// The headline accuracy figure the server reports for the model (GET /api/v1/model), with where it
// comes from; nothing is shown when the server has none.
async function refreshAccuracy() {
  let m;
  try { m = await getJSON("/api/v1/model?" + new URLSearchParams({ symbol: state.symbol })); } catch (e) { return; }
  const el = $("accuracy");
  if (!el || !m || m.error || !m.accuracy) return;
  const a = m.accuracy;
  const headline = typeof a === "string" ? a : a.headline || a.summary || Object.entries(a)
    .filter(([, v]) => typeof v === "number" || typeof v === "string").map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(3) : v}`).join(" · ");
  const href = typeof a === "object" ? a.readme || a.url : m.accuracy_url || null;
  const title = "README: “Accuracy — measured, with baselines”";
  el.innerHTML = `<h2 style="margin-top:8px">Accuracy (out of sample)</h2><p>${escapeText(headline)}</p>` +
    (m.accuracy_suite ? `<p class="dim">measured by ${escapeText(m.accuracy_suite)}</p>` : "") +
    `<p>Data set, baselines and error bars: ${href ? `<a href="${escapeText(href)}" target="_blank" rel="noopener">${title}</a>` : title}.</p>`;
}

// Sessions (Asia/Europe/US) and the funding cycle: estimated realised liquidations over the history.
let funding = null;
async function refreshSessions() {
  if (!state.symbol) return;
  let r;
  try { r = await getJSON("/api/v1/sessions?" + new URLSearchParams({ symbol: state.symbol })); } catch (e) { return; }
  if (!r || r.error || r.symbol !== state.symbol) return;
  $("sessions-section").hidden = false;
  $("sessions").querySelector("tbody").innerHTML = r.sessions.map((x) =>
    `<tr class="${x.session === r.current_session ? "now" : ""}"><td>${escapeText(x.session)}</td><td>${escapeText(x.hours_utc)}</td>` +
    `<td title="longs ${formatUsd(x.long_usd)} · shorts ${formatUsd(x.short_usd)}">${formatUsd(x.usd)}</td>` +
    `<td>${Math.round(x.share * 100)}%</td><td>${formatUsd(x.usd_per_hour)}</td></tr>`).join("");
  funding = r.funding ? { ...r.funding, at: Date.now() } : null;
  const cyc = r.funding_cycle;
  const el = $("funding-cycle");
  if (cyc && cyc.mean_usd && cyc.mean_usd.length) {
    const top = Math.max(...cyc.mean_usd, 1);
    const now = funding && funding.seconds_left != null
      ? Math.floor((cyc.interval_hours * 3600 - funding.seconds_left) / 3600) : -1;
    el.innerHTML = cyc.mean_usd.map((v, i) => `<div class="${i === now ? "now" : ""}" style="height:${Math.max(2, (v / top) * 100)}%" ` +
      `title="hour ${cyc.hour[i]} of the cycle: ${formatUsd(v)} on average (${cyc.slots[i]} cycles)"><span>${cyc.hour[i]}</span></div>`).join("");
  } else el.innerHTML = "";
  tickFunding();
}
function tickFunding() {
  const el = $("funding");
  if (!el) return;
  if (!funding) { el.textContent = ""; return; }
  // counts down on the wall clock only on a live market (a replay or the sped-up demo runs its own clock:
  // there the figure is as of the last refresh)
  const ticking = /^(live|delayed)/.test($("health").textContent.trim().toLowerCase());
  const left = Math.max(0, Math.round(funding.seconds_left - (ticking ? (Date.now() - funding.at) / 1000 : 0)));
  const hh = String(Math.floor(left / 3600)).padStart(2, "0"), mm = String(Math.floor((left % 3600) / 60)).padStart(2, "0");
  const ss = String(left % 60).padStart(2, "0");
  el.innerHTML = `funding ${funding.rate != null ? (funding.rate * 100).toFixed(4) + "%" : "–"} every ${funding.interval_hours}h · next in ` +
    `<b>${hh}:${mm}:${ss}</b> <span class="dim">(market clock)</span><br><span class="dim">mean liquidations by hour of the funding cycle:</span>`;
}

function switchMarket() {
  applyView();
  refreshStats();
  loadLiquidations();
  refreshSessions();
}

async function setupRisk() {
  // Shown only when the server offers the position-risk endpoint (the analytics module).
  try {
    const doc = await getJSON("/api/v1/openapi.json");
    if (!doc.paths || !doc.paths["/api/v1/risk"]) return;
  } catch (e) { return; }
  $("risk-section").hidden = false;
  $("risk-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const q = new URLSearchParams({ symbol: state.symbol, side: f.get("side"), entry: f.get("entry"), leverage: f.get("leverage"), size: f.get("size") });
    const r = await getJSON("/api/v1/risk?" + q);
    $("risk-out").innerHTML = r.error ? `<span class="short">${escapeText(r.error)}</span>` : renderRisk(r);
  };
  const entry = document.querySelector("#risk-form [name=entry]");
  const price = state.symbols.find((m) => m.key === state.symbol)?.price;
  if (price && !entry.value) { entry.value = roundEntry(price); state.riskSymbol = state.symbol; }
  setupPortfolio();
}

// ---- portfolio exposure: several positions kept in localStorage, assessed together by the server ----
const PORTFOLIO_KEY = "liqheat.portfolio.v1";
function loadPortfolio() {
  try {
    const p = JSON.parse(localStorage.getItem(PORTFOLIO_KEY) || "{}");
    return { positions: Array.isArray(p.positions) ? p.positions.slice(0, 20) : [], limit: p.limit > 0 ? p.limit : 10,
             portfolio: p.portfolio > 0 ? p.portfolio : null };
  } catch (e) { return { positions: [], limit: 10, portfolio: null }; }
}
const portfolio = loadPortfolio();
function savePortfolio() {
  localStorage.setItem(PORTFOLIO_KEY, JSON.stringify(portfolio));
}
function formPosition() {
  const f = new FormData($("risk-form"));
  return { symbol: state.symbol, side: f.get("side"), entry: Number(f.get("entry")), leverage: Number(f.get("leverage")),
           size: Number(f.get("size")) };
}
function coinOf(key) {
  const m = state.symbols.find((x) => x.key === key);
  return m ? m.coin || m.symbol : key;
}
function setupPortfolio() {
  $("portfolio-section").hidden = false;
  $("limit").value = String(portfolio.limit);
  $("portfolio-usd").value = portfolio.portfolio ? String(portfolio.portfolio) : "";
  $("add-position").onclick = () => {
    const p = formPosition();
    if (!(p.entry > 0) || !(p.leverage >= 1) || !(p.size > 0)) { $("portfolio-out").innerHTML = `<span class="short">fill in entry, leverage and size first</span>`; return; }
    if (portfolio.positions.length >= 20) { $("portfolio-out").innerHTML = `<span class="short">at most 20 positions</span>`; return; }
    portfolio.positions.push(p);
    savePortfolio();
    refreshPortfolio();
  };
  $("limit").onchange = () => { const v = Number($("limit").value); if (v > 0 && v <= 100) { portfolio.limit = v; savePortfolio(); refreshPortfolio(); } };
  $("portfolio-usd").onchange = () => { const v = Number($("portfolio-usd").value); portfolio.portfolio = v > 0 ? v : null; savePortfolio(); refreshPortfolio(); };
  for (const name of ["side", "entry", "leverage", "size"]) document.querySelector(`#risk-form [name=${name}]`).addEventListener("change", () => refreshPortfolio());
  $("portfolio").addEventListener("click", (ev) => {
    const i = ev.target.dataset && ev.target.dataset.remove;
    if (i == null) return;
    portfolio.positions.splice(Number(i), 1);
    savePortfolio();
    refreshPortfolio();
  });
  refreshPortfolio();
  setInterval(refreshPortfolio, 30000);
}
let portfolioSeq = 0;
async function refreshPortfolio() {
  const body = $("portfolio").querySelector("tbody");
  const out = $("portfolio-out");
  if (!portfolio.positions.length) {
    body.innerHTML = `<tr><td colspan="8" class="dim">no positions yet: fill in the form above and "Add to portfolio"</td></tr>`;
    out.innerHTML = "";
    return;
  }
  const seq = ++portfolioSeq;
  const q = new URLSearchParams({ symbol: state.symbol, positions: JSON.stringify(portfolio.positions), limit: portfolio.limit / 100 });
  if (portfolio.portfolio) q.set("portfolio", portfolio.portfolio);
  const np = formPosition();
  if (np.leverage >= 1 && np.size > 0) q.set("new", JSON.stringify(np.entry > 0 ? np : { ...np, entry: undefined }));
  let r;
  try { r = await getJSON("/api/v1/risk?" + q); } catch (e) { return; }
  if (seq !== portfolioSeq) return; // a newer request is on its way
  if (r.error) { out.innerHTML = `<span class="short">${escapeText(r.error)}</span>`; return; }
  body.innerHTML = r.positions.map((x, i) => {
    const p = portfolio.positions[i];
    const liq = x.error ? `<span class="short" title="${escapeText(x.error)}">error</span>` : fmtPrice(x.liquidation_price);
    const grade = x.error ? "–" : `<span class="grade-${x.grade}">${x.grade}</span>`;
    return `<tr class="${p.side}"><td>${escapeText(coinOf(x.symbol || p.symbol))}</td><td class="${p.side}">${p.side}</td><td>${fmtPrice(p.entry)}</td>` +
      `<td>${p.leverage}x</td><td>${formatUsd(p.size)}</td><td>${liq}</td><td>${grade}</td>` +
      `<td><button type="button" data-remove="${i}" title="remove">×</button></td></tr>`;
  }).join("");
  const share = r.exposed_share * 100, limit = r.limit_share * 100;
  let html = `<p>liquidated inside elevated/high zones: <b class="${r.over_limit ? "over" : "under"}">${share.toFixed(1)}%</b> ` +
    `of ${formatUsd(r.portfolio_usd)} (${formatUsd(r.exposed_usd)}) — limit ${+limit.toFixed(1)}%${r.over_limit ? " <b class=\"over\">over the limit</b>" : ""}</p>`;
  const sgg = r.suggestion;
  if (sgg) {
    html += `<p>new ${escapeText(coinOf(sgg.symbol))} ${sgg.side} ${sgg.leverage}x at ${fmtPrice(sgg.entry)} (liq. ${fmtPrice(sgg.liquidation_price)}, ` +
      `<span class="grade-${sgg.grade}">${sgg.grade}</span>): suggested size <b>${formatUsd(sgg.suggested_usd)}</b> of ${formatUsd(sgg.requested_usd)}` +
      (sgg.cut_pct ? ` (cut ${sgg.cut_pct}%: entering a cluster)` : "") + `<br><span class="dim">${escapeText(sgg.reason || "")}</span></p>`;
  }
  out.innerHTML = html + `<p class="dim">estimated</p>`;
}

function roundEntry(price) {
  return price >= 1000 ? Math.round(price) : Number(price.toPrecision(6));
}

// An entry typed for BTC means nothing for SOL: a new market resets the form to its price and clears
// the old assessment and its price line.
function riskFollowsMarket(s) {
  if (!s || !(s.price > 0) || s.symbol === state.riskSymbol) return;
  const entry = document.querySelector("#risk-form [name=entry]");
  const first = state.riskSymbol === null;
  state.riskSymbol = s.symbol;
  if (first && entry.value) return;
  entry.value = roundEntry(s.price);
  $("risk-out").innerHTML = "";
  if (riskLine) { candles.removePriceLine(riskLine); riskLine = null; }
}

let riskLine = null;
function renderRisk(r) {
  if (riskLine) candles.removePriceLine(riskLine);
  riskLine = candles.createPriceLine({ price: r.liquidation_price, color: "#fde725", lineWidth: 1, lineStyle: 2,
                                        axisLabelVisible: true, title: `your ${r.position.side} liq.` });
  const z = r.zone;
  const t = r.touch || {};
  const c = r.cascade;
  const rows = [
    ["liquidation price", `${fmtPrice(r.liquidation_price)} (${r.distance_pct.toFixed(2)}%)`],
    ["maintenance margin", `${(r.mmr * 100).toFixed(2)}%`],
    ["sits in", z ? `<span class="grade-${z.grade}">${z.grade}</span> ${z.side} zone ${fmtPrice(z.price_low)}–${fmtPrice(z.price_high)} (${formatUsd(z.usd)})` : "no estimated zone"],
    ["reach it within", t["1h"] != null ? `1h ${pctText(t["1h"])} · 4h ${pctText(t["4h"])} · 24h ${pctText(t["24h"])}` : "–"],
    ["high zones on the way", String(r.high_between)],
    ["cascade", c ? `${r.cascade_reaches ? "<b class=\"short\">would reach it</b>" : "would stop short"} (to ${fmtPrice(c.end_price)}, ${formatUsd(c.total_usd)})` : "–"],
  ];
  return `<dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl><p style="color:#8a90a6">estimated</p>`;
}

main();
