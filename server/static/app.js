// The chart page: candles + the liqheat overlay (heatmap under the candles, liquidation-map profile
// beside the price scale), realised liquidations in a lower pane, zones, market stats, model parameters.
import { attachLiquidationHeatmap, formatUsd } from "/static/liqheat-overlay.js";

const LWC = window.LightweightCharts;
const TIMEFRAMES = ["5m", "15m", "1h", "4h", "1d", "1w"];
const TF_SECONDS = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400, "1w": 604800 };
const PROFILE_WIDTH = 110;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  symbols: [],
  symbol: params.get("symbol") || null,
  timeframe: params.get("timeframe") || "5m",
  tier: params.get("tier") || "all",
  range: Number(params.get("range") || 86400),
  scale: params.get("scale") || "sqrt",
  zones: [],
};

function columnsFor(range, tf) {
  return Math.max(20, Math.min(2000, Math.round(range / TF_SECONDS[tf])));
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
  el.textContent = state;
  el.title = typeof h === "string" ? h : `${h.state}${h.reason ? ": " + h.reason : ""} (updated ${Math.round(h.age_s)}s ago)`;
}

function renderZones() {
  const body = $("zones").querySelector("tbody");
  body.innerHTML = "";
  for (const z of state.zones.slice(0, 12)) {
    const tr = document.createElement("tr");
    tr.className = z.side;
    tr.innerHTML = `<td>${z.side}</td><td>${fmtPrice(z.price_low)}–${fmtPrice(z.price_high)}</td>` +
      `<td>${formatUsd(z.usd)}</td><td class="grade-${z.grade}">${z.grade}</td>` +
      `<td title="chance price reaches it within 24h (touch model)">${z.touch_probability != null ? Math.round(z.touch_probability * 100) + "%" : "–"}</td>` +
      `<td>${z.distance_pct >= 0 ? "+" : ""}${z.distance_pct.toFixed(2)}%</td>`;
    tr.title = (z.touch_1h != null ? `touch 1h ${pctText(z.touch_1h)}, 4h ${pctText(z.touch_4h)}, 24h ${pctText(z.touch_24h)}; ` : "") + `peak ${fmtPrice(z.peak_price)}, ${z.percentile}th percentile` +
      (z.share_of_daily_volume != null ? `, ${(z.share_of_daily_volume * 100).toFixed(2)}% of daily volume` : "");
    body.appendChild(tr);
  }
  if (!state.zones.length) body.innerHTML = `<tr><td colspan="6" style="color:#8a90a6">no zones yet</td></tr>`;
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
    ["fitted on", m.fitted_on], ["accuracy", m.accuracy], ["accuracy suite", m.accuracy_suite],
  ].filter(([, v]) => v !== undefined);
  $("model-body").innerHTML = `<table>${tiers}</table><table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("")}</table>` +
    `<p style="color:#8a90a6">Estimated from open interest / volume with the ladder above. See the README's model section.</p>`;
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
      const r = await (await fetch("/api/v1/zones?" + new URLSearchParams({ symbol: state.symbol }))).json();
      if (!r.error && r.symbol === state.symbol) { state.zones = r.zones; renderZones(); }
    } catch (e) { /* keep the zones we have */ }
  }, 250);
}

async function refreshStats() {
  if (!state.symbol) return;
  try {
    const m = await (await fetch("/api/v1/market?" + new URLSearchParams({ symbol: state.symbol }))).json();
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
    const a = await (await fetch("/api/v1/alerts?" + new URLSearchParams({ symbol: state.symbol, limit: 20 }))).json();
    for (const x of a.alerts || []) addEvent(`⚠ ${escapeText(x.message)}`, "alert");
  } catch (e) { /* alerts also arrive live */ }
  try {
    const r = await (await fetch("/api/v1/liquidations?" + new URLSearchParams({ symbol: state.symbol, limit: 40 }))).json();
    $("liq-source").textContent = r.source ? `(${r.source})` : "";
    for (const e of r.events || []) addEvent(liquidationLine(e));
  } catch (e) { /* live events still arrive */ }
}

function updateUrl() {
  const q = new URLSearchParams({ symbol: state.symbol, timeframe: state.timeframe, tier: state.tier, range: state.range, scale: state.scale });
  history.replaceState(null, "", "?" + q);
}

function applyView() {
  updateUrl();
  const opts = { symbol: state.symbol, timeframe: state.timeframe, tier: state.tier, scale: state.scale,
                 columns: columnsFor(state.range, state.timeframe) };
  if (!heat) {
    heat = attachLiquidationHeatmap(chart, candles, { ...opts, candles: true, bins: 400, profileWidth: PROFILE_WIDTH,
                                                      autoscaleMargin: 0.03 });
    heat.on("snapshot", onSnapshot);
    heat.on("realised", (r) => { setRealised(r.time, r.long_usd, r.short_usd); renderRealised(); });
    heat.on("zones", () => refreshZones()); // the REST zones are the same plus touch probabilities
    heat.on("health", (h) => healthBadge(h));
    heat.on("status", (s) => { if (!["live", "demo", "replay", "delayed", "stale", "reconnecting"].includes(s)) healthBadge(s); });
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
  state.zones = s.zones || [];
  renderZones();
  refreshZones();
  renderModel(s.model);
  healthBadge(s.health);
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
    b.onclick = () => { state.timeframe = tf; renderControls(); applyView(); };
    tfs.appendChild(b);
  }
  $("range").value = String(state.range);
  $("scale").value = state.scale;
}

async function main() {
  window.liqheat = { chart, candles, realisedLong, realisedShort, heat: null, ready: false };
  const res = await (await fetch("/api/v1/symbols")).json();
  state.symbols = res.symbols;
  const found = state.symbols.find((m) => m.key === state.symbol || m.coin === state.symbol || m.symbol === state.symbol);
  state.symbol = found ? found.key : state.symbols.length ? state.symbols[0].key : null;
  if (!state.symbol) { healthBadge("error: no markets"); return; }
  renderControls();
  $("exchange").onchange = () => { state.symbol = marketsFor($("exchange").value)[0].key; state.tier = "all"; renderControls(); switchMarket(); };
  $("symbol").onchange = () => { state.symbol = $("symbol").value; state.tier = "all"; renderControls(); switchMarket(); };
  $("tier").onchange = () => { state.tier = $("tier").value; applyView(); };
  $("range").onchange = () => { state.range = Number($("range").value); applyView(); };
  $("scale").onchange = () => { state.scale = $("scale").value; applyView(); };
  chart.timeScale().subscribeVisibleLogicalRangeChange(() => fitRightOffset());
  switchMarket();
  setInterval(refreshStats, 15000);
  setupRisk();
  window.liqheat.ready = true;
}

function switchMarket() {
  applyView();
  refreshStats();
  loadLiquidations();
}

async function setupRisk() {
  // Shown only when the server offers the position-risk endpoint (the analytics module).
  try {
    const doc = await (await fetch("/api/v1/openapi.json")).json();
    if (!doc.paths || !doc.paths["/api/v1/risk"]) return;
  } catch (e) { return; }
  $("risk-section").hidden = false;
  $("risk-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const q = new URLSearchParams({ symbol: state.symbol, side: f.get("side"), entry: f.get("entry"), leverage: f.get("leverage"), size: f.get("size") });
    const r = await (await fetch("/api/v1/risk?" + q)).json();
    $("risk-out").innerHTML = r.error ? `<span class="short">${escapeText(r.error)}</span>` : renderRisk(r);
  };
  const entry = document.querySelector("#risk-form [name=entry]");
  const price = state.symbols.find((m) => m.key === state.symbol)?.price;
  if (price && !entry.value) entry.value = Math.round(price);
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
