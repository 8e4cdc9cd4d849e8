// liqheat overlay — an estimated liquidation heatmap for any TradingView Lightweight Charts (v5) chart.
//
//   import { attachLiquidationHeatmap } from "http://127.0.0.1:8000/static/liqheat-overlay.js";
//   const heat = attachLiquidationHeatmap(chart, candleSeries, {
//     server: "http://127.0.0.1:8000",      // a liqheat server ("" = the page's own origin)
//     symbol: "BTC", timeframe: "15m", tier: "all",
//   });
//   heat.setOptions({ tier: "25x", scale: "log", threshold: 0.2 });   // threshold: hide the faint cells
//   heat.on("snapshot", (s) => ...);          // also: bar, column, map, zones, realised, liquidation,
//   heat.detach();                            //        alert, health, status, hover
//
// The heatmap is a *series primitive* on the candle series: its pane view draws in `drawBackground`, so
// cells sit above the grid and under the candles, and nothing is drawn on mouse moves (the crosshair
// layer is untouched). Cells are kept in an offscreen image, one pixel per (column, price bin), and each
// frame draws it with one scaled drawImage in bitmap coordinates. The liquidation-map profile (current
// book by price, per leverage tier) is drawn in `draw` as bars beside the price scale.
//
// Data comes from the liqheat server: a snapshot then deltas over the WebSocket /api/v1/ws (see the
// server's PROTOCOL.md), with a REST fallback (polling /api/v1/heatmap) while the socket is refused or the
// server is down; the socket is retried with backoff (0.5 s doubling to maxRetrySeconds), so a restarted
// server brings the chart back live.
// Every USD figure is a model estimate; the legend says so and prints absolute USD beside the colours.

const DEFAULTS = {
  server: "",
  symbol: "BTC",
  timeframe: "5m",
  tier: "all",
  bins: 200,
  columns: 300,
  priceLow: null,
  priceHigh: null,
  scale: "sqrt", // intensity scale: linear | sqrt | log
  scaleMax: null, // USD at the top of the colour ramp (null: the largest cell)
  side: "both", // both | long | short
  opacity: 0.9,
  connect: true, // fetch from the server; false: the page hands data in with setData()
  live: true, // WebSocket updates (falls back to polling every pollSeconds while it retries the socket)
  pollSeconds: 15,
  maxRetrySeconds: 15, // longest wait between two attempts to reopen the socket (backoff from 0.5 s)
  candles: false, // also feed the candle series from the server (snapshot + live bars)
  profile: true, // liquidation-map bars beside the price scale
  profileWidth: 110, // CSS px
  legend: true, // colour legend with USD values + "Estimated" label (DOM, in the chart's corner)
  tooltip: true, // hover: price band, USD long/short, tier mix
  extendLive: true, // draw the live book (last column) on to the right edge of the pane
  autoscaleMargin: 0, // > 0: the price scale always shows at least price ± this fraction (e.g. 0.04)
  autoscaleLargest: 0, // > 0: the price scale also shows the largest levels within this fraction of price
  focusPrices: [], // more prices to keep in view under autoscaleLargest (e.g. the largest zones)
  threshold: 0, // 0..1: cells below this share of the colour scale's top are not drawn (hide the small ones)
  mapWeight: "usd", // the profile beside the price scale: "usd", or "touch" = USD x P(price reaches it within 4h)
};

// Colour ramp (transparent → violet → blue → teal → green → yellow), 256 RGBA entries.
const STOPS = [
  [0.0, 40, 10, 80, 0.0],
  [0.1, 72, 24, 128, 0.22],
  [0.3, 59, 82, 180, 0.5],
  [0.55, 33, 150, 160, 0.72],
  [0.8, 110, 200, 80, 0.86],
  [1.0, 253, 231, 37, 0.96],
];
function buildLut() {
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < STOPS.length - 2 && t > STOPS[k + 1][0]) k++;
    const a = STOPS[k], b = STOPS[k + 1];
    const f = (t - a[0]) / (b[0] - a[0]);
    for (let j = 0; j < 4; j++) {
      const v = a[j + 1] + (b[j + 1] - a[j + 1]) * f;
      lut[i * 4 + j] = j === 3 ? Math.round(v * 255) : Math.round(v);
    }
  }
  lut[3] = 0; // zero stays fully transparent
  return lut;
}
const LUT = buildLut();
export const RAMP = LUT;

const LONG_TIER_COLOURS = ["#ffd1d9", "#ff9fb1", "#ff6f8a", "#f0445f", "#c81e3e", "#8f0f28"];
const SHORT_TIER_COLOURS = ["#c8f5ef", "#8fe6da", "#52d1c0", "#22b3a1", "#128a7c", "#0a5f56"];

export function formatUsd(x) {
  if (x == null || !isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1e9) return "$" + (x / 1e9).toFixed(a >= 1e10 ? 1 : 2) + "B";
  if (a >= 1e6) return "$" + (x / 1e6).toFixed(a >= 1e7 ? 1 : 2) + "M";
  if (a >= 1e3) return "$" + (x / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "K";
  return "$" + x.toFixed(0);
}

function formatPrice(p) {
  if (!isFinite(p)) return "–";
  const a = Math.abs(p);
  const d = a >= 1000 ? 1 : a >= 10 ? 2 : a >= 1 ? 3 : 5;
  return p.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

// Seconds the server asked us to wait (HTTP 429/503 with Retry-After: busy, or too many requests from
// this address), or null for any other answer.
function busyDelay(response) {
  if (response.status !== 429 && response.status !== 503) return null;
  const after = Number(response.headers.get("Retry-After"));
  return Number.isFinite(after) && after > 0 ? Math.min(60, after) : null;
}
class BusyError extends Error {}

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// sqrt-u8 → USD: usd = max * (level/255)^2
function decodeInto(target, offset, b64, maxUsd) {
  const bytes = b64ToBytes(b64);
  const k = maxUsd / (255 * 255);
  for (let i = 0; i < bytes.length; i++) target[offset + i] = bytes[i] * bytes[i] * k;
  return bytes.length;
}

// Intensity scale: USD → 0..1 (and back, for the legend).
function makeScale(kind, top) {
  top = top > 0 ? top : 1;
  const K = 1000; // log scale spans three decades below the top
  if (kind === "linear") return { f: (u) => u / top, inv: (t) => t * top };
  if (kind === "log")
    return {
      f: (u) => (u <= 0 ? 0 : Math.log1p((K * u) / top) / Math.log1p(K)),
      inv: (t) => (Math.expm1(t * Math.log1p(K)) * top) / K,
    };
  return { f: (u) => Math.sqrt(u / top), inv: (t) => t * t * top };
}

class HeatmapRenderer {
  constructor(overlay) {
    this.o = overlay;
  }
  drawBackground(target) {
    const o = this.o;
    const t0 = performance.now();
    if (!o.canvas || !o.geom) return;
    const g = o.geom;
    target.useBitmapCoordinateSpace((scope) => {
      const ctx = scope.context;
      const hpr = scope.horizontalPixelRatio, vpr = scope.verticalPixelRatio;
      ctx.save();
      ctx.globalAlpha = o.opts.opacity;
      ctx.imageSmoothingEnabled = false;
      const w = scope.bitmapSize.width - (o.opts.profile ? Math.round(o.opts.profileWidth * hpr) : 0);
      ctx.beginPath();
      ctx.rect(0, 0, Math.max(0, w), scope.bitmapSize.height);
      ctx.clip();
      for (const seg of g.segments) {
        const x0 = Math.round(seg.x0 * hpr), x1 = Math.round(seg.x1 * hpr);
        if (x1 <= x0) continue;
        ctx.globalAlpha = o.opts.opacity * (seg.alpha || 1);
        if (g.rows === null) {
          const y0 = Math.round(g.yTop * vpr), y1 = Math.round(g.yBottom * vpr);
          if (y1 > y0) ctx.drawImage(o.canvas, seg.c0, 0, seg.c1 - seg.c0, o.bins, x0, y0, x1 - x0, y1 - y0);
        } else {
          // non-linear rows (log bins on a linear scale or the reverse): one strip per price bin
          for (let r = 0; r < o.bins; r++) {
            const y0 = Math.round(g.rows[r + 1] * vpr), y1 = Math.round(g.rows[r] * vpr);
            if (y1 > y0) ctx.drawImage(o.canvas, seg.c0, o.bins - 1 - r, seg.c1 - seg.c0, 1, x0, y0, x1 - x0, y1 - y0);
          }
        }
      }
      ctx.restore();
    });
    o.stats.draws++;
    o.stats.lastDrawMs = performance.now() - t0;
    o.stats.totalDrawMs += o.stats.lastDrawMs;
  }
  draw(target) {
    const o = this.o;
    if (!o.opts.profile || !o.profile || !o.geom) return;
    const p = o.profile;
    target.useBitmapCoordinateSpace((scope) => {
      const ctx = scope.context;
      const hpr = scope.horizontalPixelRatio, vpr = scope.verticalPixelRatio;
      const W = scope.bitmapSize.width;
      const width = o.opts.profileWidth * hpr;
      const left = W - width;
      ctx.save();
      ctx.fillStyle = "rgba(12, 14, 22, 0.72)";
      ctx.fillRect(left, 0, width, scope.bitmapSize.height);
      ctx.strokeStyle = "rgba(255,255,255,0.12)";
      ctx.lineWidth = Math.max(1, hpr);
      ctx.beginPath();
      ctx.moveTo(left + 0.5, 0);
      ctx.lineTo(left + 0.5, scope.bitmapSize.height);
      ctx.stroke();
      const pad = 4 * hpr;
      const maxLen = width - pad * 2;
      const H = scope.bitmapSize.height;
      const showLong = o.opts.side !== "short", showShort = o.opts.side !== "long";
      // Scale and label by what is on screen, so the visible bars use the whole width.
      let top = 0, bestLong = -1, bestShort = -1;
      for (let b = 0; b < p.bins; b++) {
        if (p.y[b] == null || p.y[b + 1] == null || p.y[b] * vpr < 0 || p.y[b + 1] * vpr > H) continue;
        const l = showLong ? p.long[b] : 0, s = showShort ? p.short[b] : 0;
        if (l + s > top) top = l + s;
        if (l > 0 && (bestLong < 0 || l > p.long[bestLong])) bestLong = b;
        if (s > 0 && (bestShort < 0 || s > p.short[bestShort])) bestShort = b;
      }
      if (!(top > 0)) top = 1;
      const sides = [];
      if (showLong) sides.push([p.longTiers, LONG_TIER_COLOURS]);
      if (showShort) sides.push([p.shortTiers, SHORT_TIER_COLOURS]);
      for (let b = 0; b < p.bins; b++) {
        const yTop = p.y[b + 1], yBot = p.y[b];
        if (yTop == null || yBot == null) continue;
        let y0 = Math.round(yTop * vpr), y1 = Math.round(yBot * vpr);
        if (y1 - y0 < 1) y1 = y0 + 1;
        if (y1 < 0 || y0 > H) continue;
        let x = left + pad;
        for (const [tiers, colours] of sides) {
          for (let t = 0; t < tiers.length; t++) {
            const v = tiers[t][b];
            if (!(v > 0)) continue;
            const len = (v / top) * maxLen;
            ctx.fillStyle = colours[Math.min(t, colours.length - 1)];
            ctx.fillRect(x, y0, Math.max(len, 0.5 * hpr), Math.max(1, y1 - y0 - 1));
            x += len;
          }
        }
      }
      // USD labels on the largest long and short bins in view
      ctx.font = `${Math.round(10 * hpr)}px system-ui, sans-serif`;
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (const [b, side] of [[bestLong, "long"], [bestShort, "short"]]) {
        if (b < 0) continue;
        const y = ((p.y[b] + p.y[b + 1]) / 2) * vpr;
        if (y < 16 * vpr || y > H - 8 * vpr) continue;
        const usd = side === "long" ? p.long[b] : p.short[b];
        ctx.fillStyle = "rgba(12,14,22,0.8)";
        const text = formatUsd(usd);
        const tw = ctx.measureText(text).width;
        ctx.fillRect(W - pad - tw - 3 * hpr, y - 7 * vpr, tw + 6 * hpr, 14 * vpr);
        ctx.fillStyle = side === "long" ? "#ff8fa3" : "#6fe3d3";
        ctx.fillText(text, W - pad, y);
      }
      ctx.fillStyle = "rgba(255,255,255,0.55)";
      ctx.textAlign = "left";
      ctx.fillText(o.mapWeighted ? "map×touch 4h (est.)" : "liq. map (est.)", left + pad, 10 * vpr);
      ctx.restore();
    });
  }
}

class PaneView {
  constructor(overlay) {
    this._renderer = new HeatmapRenderer(overlay);
  }
  zOrder() {
    return "normal";
  }
  renderer() {
    return this._renderer;
  }
}

class HeatmapPrimitive {
  constructor(overlay) {
    this.o = overlay;
    this._views = [new PaneView(overlay)];
  }
  attached(param) {
    this.o._attached(param);
  }
  detached() {
    this.o._detached();
  }
  updateAllViews() {
    this.o._updateGeometry();
  }
  paneViews() {
    return this._views;
  }
  autoscaleInfo() {
    // Keep nearby liquidation levels in view, not only the candles (merged with the series' own range),
    // and, with autoscaleLargest, the largest levels: the cell at the top of the colour scale, the
    // biggest long and short bars of the map and any focusPrices (e.g. the page's largest zones).
    const o = this.o, m = o.opts.autoscaleMargin, p = o.lastPrice;
    if (!(p > 0)) return null;
    let lo = Infinity, hi = -Infinity;
    if (m > 0) { lo = p * (1 - m); hi = p * (1 + m); }
    const reach = o.opts.autoscaleLargest;
    if (reach > 0) {
      // only levels the chart draws: inside the heatmap's price range (beyond it the pane would be empty)
      const e = o.edges, bottom = e ? e[0] : 0, top = e ? e[e.length - 1] : Infinity;
      for (const x of [...o.focus, ...(o.opts.focusPrices || [])]) {
        if (!(x > 0) || x < bottom || x > top || Math.abs(Math.log(x / p)) > Math.log1p(reach)) continue;
        lo = Math.min(lo, x * 0.995);
        hi = Math.max(hi, x * 1.005);
      }
    }
    if (!(hi > lo)) return null;
    return { priceRange: { minValue: lo, maxValue: hi } };
  }
}

class LiquidationHeatmap {
  constructor(chart, series, options) {
    this.chart = chart;
    this.series = series;
    this.opts = { ...DEFAULTS, ...(options || {}) };
    this.listeners = new Map();
    this.stats = {
      draws: 0, lastDrawMs: 0, totalDrawMs: 0, imageBuilds: 0, columnUpdates: 0, snapshots: 0, deltas: 0,
      resyncs: 0, gaps: 0, messages: 0, lastSeq: null, lastMessageAt: 0, transport: "none",
      busy: 0, // answers "busy, retry after N s" (HTTP 429/503, or a snapshot the server could not take now)
    };
    // heatmap data
    this.times = [];
    this.edges = null;
    this.bins = 0;
    this.long = null; // Float32Array C*B USD
    this.short = null;
    this.cap = 0;
    this.tiers = [];
    this.maxUsd = 0;
    this.canvas = null;
    this.image = null;
    this.geom = null;
    this.profile = null;
    this.mapData = null;
    this.focus = []; // prices of the largest levels (autoscaleLargest)
    this.snapshot = null;
    this.subId = "h" + Math.random().toString(36).slice(2, 8);
    this.ws = null;
    this.closed = false;
    this.retry = 0;
    this.requestUpdate = () => {};
    this.primitive = new HeatmapPrimitive(this);
    series.attachPrimitive(this.primitive);
    this._onCrosshair = (param) => this._hover(param);
    chart.subscribeCrosshairMove(this._onCrosshair);
    this._onData = () => { this.indexDirty = true; this.requestUpdate(); };
    series.subscribeDataChanged(this._onData);
    if (this.opts.legend || this.opts.tooltip) this._makeDom();
    if (this.opts.connect) this._connect();
  }

  // ---- public API ---------------------------------------------------------------------------------
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }
  setOptions(partial) {
    const before = this.opts;
    this.opts = { ...this.opts, ...partial };
    if (partial.mapWeight !== undefined && partial.mapWeight !== before.mapWeight) {
      const raw = this.rawMap || this.mapData;
      this.mapWeighted = false;
      this.weightedAt = 0;
      if (raw && raw.weight !== "touch") this._loadMap(raw);
    }
    if (Object.keys(partial).every((k) => ["focusPrices", "autoscaleLargest", "autoscaleMargin", "mapWeight"].includes(k))) {
      this.requestUpdate(); // only what the price scale keeps in view
      return;
    }
    const viewKeys = ["server", "symbol", "timeframe", "tier", "bins", "columns", "priceLow", "priceHigh", "live"];
    if (this.opts.connect && viewKeys.some((k) => partial[k] !== undefined && partial[k] !== before[k])) {
      this._resubscribe();
    } else {
      this._rebuildImage();
      this._updateProfile();
      this._renderLegend();
      this.requestUpdate();
    }
  }
  options() {
    return { ...this.opts };
  }
  // Draw data you already have (the REST /api/v1/heatmap and /api/v1/map payloads), no server needed.
  setData(heatmap, map) {
    if (heatmap) this._loadHeatmap(heatmap);
    if (map) this._loadMap(map);
  }
  detach() {
    this.closed = true;
    this._closeSocket();
    clearTimeout(this.pollTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.busyTimer);
    this.chart.unsubscribeCrosshairMove(this._onCrosshair);
    this.series.unsubscribeDataChanged(this._onData);
    try { this.series.detachPrimitive(this.primitive); } catch (e) { /* already gone */ }
    if (this.dom) this.dom.remove();
  }
  // The cell under a chart point: {time, priceLow, priceHigh, longUsd, shortUsd} or null.
  cellAt(x, y) {
    if (!this.edges || !this.times.length) return null;
    const ts = this.chart.timeScale();
    const logical = ts.coordinateToLogical(x);
    const price = this.series.coordinateToPrice(y);
    if (logical == null || price == null) return null;
    const c = this._columnAtLogical(Math.round(logical));
    if (c < 0) return null;
    const b = this._binOf(price);
    if (b < 0) return null;
    const i = c * this.bins + b;
    return { time: this.times[c], column: c, bin: b, priceLow: this.edges[b], priceHigh: this.edges[b + 1],
             longUsd: this.long[i], shortUsd: this.short[i] };
  }
  // Largest USD in the data (long or short cell) and where.
  peak() {
    let best = -1, at = -1;
    const n = this.times.length * this.bins;
    for (let i = 0; i < n; i++) {
      const v = this.long[i] + this.short[i];
      if (v > best) { best = v; at = i; }
    }
    if (at < 0) return null;
    const c = Math.floor(at / this.bins), b = at % this.bins;
    return { time: this.times[c], column: c, bin: b, price: (this.edges[b] + this.edges[b + 1]) / 2, usd: best };
  }
  data() {
    return { times: this.times.slice(), edges: this.edges ? Array.from(this.edges) : [], bins: this.bins,
             tiers: this.tiers.slice(), maxUsd: this.maxUsd };
  }

  // ---- lifecycle hooks from the primitive ---------------------------------------------------------
  _attached(param) {
    this.requestUpdate = param.requestUpdate;
    this.indexDirty = true;
  }
  _detached() {
    this.requestUpdate = () => {};
  }
  _emit(event, payload) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of set) {
      try { fn(payload); } catch (e) { console.error("liqheat listener", event, e); }
    }
  }

  // ---- transport ----------------------------------------------------------------------------------
  _base() {
    return (this.opts.server || "").replace(/\/$/, "");
  }
  _wsUrl() {
    const base = this._base();
    // batch=1: the server packs what is waiting into one frame (a JSON array), fewer frames per update
    if (!base) return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws?batch=1";
    return base.replace(/^http/, "ws") + "/api/v1/ws?batch=1";
  }
  _subscribeMsg() {
    const o = this.opts;
    const m = { op: "subscribe", id: this.subId, symbol: o.symbol, timeframe: o.timeframe, tier: o.tier,
                bins: o.bins, columns: o.columns };
    if (o.priceLow != null && o.priceHigh != null) { m.price_low = o.priceLow; m.price_high = o.priceHigh; }
    return m;
  }
  _connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    if (!this.opts.live || typeof WebSocket === "undefined") return this._poll();
    if (!this.polling) this._status(this.wasLive ? "reconnecting" : "connecting");
    let ws;
    try { ws = new WebSocket(this._wsUrl()); } catch (e) { return this._poll(); }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.retry = 0;
      this.wasLive = true;
      // back on the socket: stop polling, the snapshot that follows the subscription replaces its data
      this.polling = false;
      clearTimeout(this.pollTimer);
      this.stats.transport = "websocket";
      ws.send(JSON.stringify(this._subscribeMsg()));
    };
    ws.onmessage = (ev) => {
      const data = JSON.parse(ev.data);
      if (Array.isArray(data)) for (const m of data) this._message(m);
      else this._message(data);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      if (opened) this._status("reconnecting");
      // A socket that never opened (server down or restarting, or the Origin refused): keep the chart
      // fresh by polling meanwhile, and keep trying the socket with backoff, so a restarted server
      // brings the page back live instead of leaving it on polling for good.
      else if (!this.polling) this._poll();
      this.stats.reconnects = (this.stats.reconnects || 0) + 1;
      const delay = Math.min(this.opts.maxRetrySeconds * 1000, 500 * 2 ** this.retry++);
      this.retryTimer = setTimeout(() => this._connect(), delay);
    };
  }
  _closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (ws) { ws.onclose = null; ws.onmessage = null; try { ws.close(); } catch (e) { /* closing anyway */ } }
  }
  _resubscribe() {
    clearTimeout(this.busyTimer);
    const old = this.subId;
    this.subId = "h" + Math.random().toString(36).slice(2, 8);
    this.snapshot = null;
    this.stats.lastSeq = null;
    clearTimeout(this.pollTimer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.opts.live) {
      this.ws.send(JSON.stringify({ op: "unsubscribe", sub: old }));
      this.ws.send(JSON.stringify(this._subscribeMsg()));
    } else {
      this._closeSocket();
      this.polling = false; // the next poll (if the socket stays shut) asks for the new view at once
      this._connect();
    }
  }
  async _poll() {
    clearTimeout(this.pollTimer);
    if (this.closed || (this.ws && this.ws.readyState === WebSocket.OPEN)) { this.polling = false; return; }
    this.polling = true;
    this.stats.transport = "poll";
    const o = this.opts;
    const q = new URLSearchParams({ symbol: o.symbol, timeframe: o.timeframe, tier: o.tier, bins: o.bins, columns: o.columns });
    if (o.priceLow != null && o.priceHigh != null) { q.set("price_low", o.priceLow); q.set("price_high", o.priceHigh); }
    let wait = o.pollSeconds;
    let busyAfter = null;
    try {
      const [hm, mp] = await Promise.all([
        fetch(this._base() + "/api/v1/heatmap?" + q).then((r) => {
          // busy (429/503 + Retry-After): come back when the server says, not after pollSeconds
          busyAfter = busyDelay(r);
          return r.json();
        }),
        fetch(this._base() + "/api/v1/map?" + new URLSearchParams({ symbol: o.symbol, bins: o.bins })).then((r) => r.json()),
      ]);
      if (busyAfter !== null) { wait = busyAfter; this._busy(wait); throw new BusyError(); }
      if (hm.error) throw new Error(hm.error);
      if (!this.polling) return; // the socket came back while this request was out
      this._loadHeatmap(hm);
      if (!mp.error) this._loadMap(mp);
      this._status("polling");
      this._emit("snapshot", { heatmap: hm, map: mp, polled: true });
    } catch (e) {
      // while the socket is being retried an unreachable server is a reconnect, not an error
      if (!(e instanceof BusyError)) this._status(this.wasLive ? "reconnecting" : "error: " + e.message);
    }
    if (this.polling) this.pollTimer = setTimeout(() => this._poll(), wait * 1000);
  }
  // The server is busy and said when to come back: say so, and count it (the retry is the caller's).
  _busy(seconds) {
    this.stats.busy++;
    this._status(`busy: retrying in ${seconds}s`);
  }
  _status(s) {
    this.status = s;
    this._emit("status", s);
    this._renderLegend();
  }
  _message(m) {
    this.stats.messages++;
    this.stats.lastMessageAt = performance.now();
    if (m.sub !== undefined && m.sub !== this.subId) return; // an old subscription still draining
    switch (m.type) {
      case "hello":
      case "subscribed":
      case "heartbeat":
      case "pong":
      case "unsubscribed":
        return;
      case "error":
        if (typeof m.retry_after === "number" && m.sub === this.subId) {
          // The server could not take this view's snapshot now (busy): ask again when it says.
          const sub = this.subId;
          const seconds = Math.max(1, Math.min(60, m.retry_after));
          this._busy(seconds);
          clearTimeout(this.busyTimer);
          this.busyTimer = setTimeout(() => {
            if (sub === this.subId && this.ws && this.ws.readyState === WebSocket.OPEN) {
              this.ws.send(JSON.stringify({ op: "resync", sub }));
            }
          }, seconds * 1000);
          return;
        }
        this._status("error: " + m.error);
        this._emit("error", m);
        return;
      case "resync":
        this.stats.resyncs++;
        this.stats.lastSeq = null; // wait for the snapshot that follows
        return;
      case "snapshot":
        this._applySnapshot(m);
        return;
    }
    if (typeof m.seq !== "number") return;
    if (this.stats.lastSeq === null) return; // waiting for a snapshot
    if (m.seq !== this.stats.lastSeq + 1) {
      this.stats.gaps++;
      this.stats.lastSeq = null;
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op: "resync", sub: this.subId }));
      return;
    }
    this.stats.lastSeq = m.seq;
    this.stats.deltas++;
    switch (m.type) {
      case "bar":
        if (this.opts.candles) upsertCandle(this.series, m);
        break;
      case "column":
        this._applyColumn(m);
        break;
      case "map":
        this._loadMap(m);
        break;
    }
    this._emit(m.type, m);
  }
  _applySnapshot(m) {
    this.stats.snapshots++;
    this.stats.lastSeq = m.seq;
    this.snapshot = m;
    if (this.opts.candles) {
      const c = m.candles;
      const rows = new Array(c.t.length);
      for (let i = 0; i < c.t.length; i++) rows[i] = { time: c.t[i], open: c.o[i], high: c.h[i], low: c.l[i], close: c.c[i] };
      this.series.setData(rows);
    }
    this._loadHeatmap(m.heatmap);
    this._loadMap(m.map);
    this._status(m.health ? m.health.state : "live");
    this._emit("snapshot", m);
  }

  // ---- data ---------------------------------------------------------------------------------------
  _loadHeatmap(h) {
    const C = h.times.length, B = h.edges.length - 1;
    this.times = h.times.slice();
    this.edges = Float64Array.from(h.edges);
    this.bins = B;
    this.tiers = h.tiers || [];
    this.cap = Math.max(C, 1);
    this.long = new Float32Array(this.cap * B);
    this.short = new Float32Array(this.cap * B);
    if (h.encoding === "json") {
      for (let c = 0; c < C; c++) for (let b = 0; b < B; b++) { this.long[c * B + b] = h.long[c][b]; this.short[c * B + b] = h.short[c][b]; }
    } else {
      decodeInto(this.long, 0, h.long, h.max_usd);
      decodeInto(this.short, 0, h.short, h.max_usd);
    }
    this.indexDirty = true;
    this._rebuildImage();
    this._updateFocus();
    this.requestUpdate();
  }
  _applyColumn(m) {
    if (!this.edges) return;
    const B = this.bins;
    let c = this.times.length - 1;
    while (c >= 0 && this.times[c] > m.time) c--;
    if (c < 0 || this.times[c] !== m.time) {
      if (this.times.length && m.time < this.times[this.times.length - 1]) return; // older than we keep
      // a new candle: append (dropping the oldest column when at capacity)
      if (this.times.length >= this.cap) {
        this.long.copyWithin(0, B);
        this.short.copyWithin(0, B);
        this.times.shift();
      }
      this.times.push(m.time);
      c = this.times.length - 1;
      this.indexDirty = true;
      decodeInto(this.long, c * B, m.long, m.max_usd);
      decodeInto(this.short, c * B, m.short, m.max_usd);
      this._rebuildImage();
    } else {
      decodeInto(this.long, c * B, m.long, m.max_usd);
      decodeInto(this.short, c * B, m.short, m.max_usd);
      if (!this._paintColumn(c)) this._rebuildImage();
    }
    this.stats.columnUpdates++;
    this.requestUpdate();
  }
  _loadMap(m) {
    if (m && this.opts.mapWeight === "touch" && this.opts.connect && m.weight !== "touch") {
      // the risk-weighted map comes from the REST API (GET /api/v1/map?weight=touch) on the same bins
      this.rawMap = m;
      this._fetchWeightedMap();
      if (this.mapWeighted) return;
    }
    this.mapData = m;
    this.mapWeighted = !!(m && m.weight === "touch");
    if (m && m.price > 0) this.lastPrice = m.price;
    this._updateFocus();
    this._updateProfile();
    this.requestUpdate();
  }
  // Where the largest levels are: the heatmap's top cell and the map's biggest long and short bars.
  _updateFocus() {
    const f = [];
    const peak = this.peak();
    if (peak && peak.usd > 0) f.push(peak.price);
    const m = this.mapData;
    if (m && m.edges && m.long) {
      for (const side of [m.long, m.short]) {
        let best = -1;
        for (let b = 0; b < side.length; b++) if (side[b] > 0 && (best < 0 || side[b] > side[best])) best = b;
        if (best >= 0) f.push((m.edges[best] + m.edges[best + 1]) / 2);
      }
    }
    this.focus = f;
  }
  _fetchWeightedMap() {
    const now = performance.now();
    if (this.weightedPending || now - (this.weightedAt || 0) < 3000) return; // at most every 3 s
    const m = this.rawMap;
    if (!m || !(m.price > 0) || !m.edges || m.edges.length < 2) return;
    this.weightedPending = true;
    this.weightedAt = now;
    const span = Math.min(0.9, Math.max(m.edges[m.edges.length - 1] / m.price - 1, 1 - m.edges[0] / m.price));
    const q = new URLSearchParams({ symbol: this.opts.symbol, bins: m.edges.length - 1, span: span.toFixed(6), weight: "touch", horizon: 4 });
    const symbol = this.opts.symbol;
    fetch(this._base() + "/api/v1/map?" + q).then((r) => r.json()).then((w) => {
      if (w.error || this.opts.mapWeight !== "touch" || this.opts.symbol !== symbol) return;
      this._loadMap(w);
    }).catch(() => { /* keep the map we have */ }).finally(() => { this.weightedPending = false; });
  }
  _cellValue(i) {
    const side = this.opts.side;
    return side === "long" ? this.long[i] : side === "short" ? this.short[i] : this.long[i] + this.short[i];
  }
  _top() {
    if (this.opts.scaleMax > 0) return this.opts.scaleMax;
    let m = 0;
    const n = this.times.length * this.bins;
    for (let i = 0; i < n; i++) { const v = this._cellValue(i); if (v > m) m = v; }
    return m;
  }
  _rebuildImage() {
    if (!this.edges) return;
    const C = Math.max(this.times.length, 1), B = this.bins;
    if (!this.canvas) this.canvas = document.createElement("canvas");
    if (this.canvas.width !== C || this.canvas.height !== B) {
      this.canvas.width = C;
      this.canvas.height = B;
      this.image = null;
    }
    this.ctx2d = this.ctx2d || this.canvas.getContext("2d");
    if (!this.image) this.image = this.ctx2d.createImageData(C, B);
    this.maxUsd = this._top();
    this.scale = makeScale(this.opts.scale, this.maxUsd);
    const px = this.image.data;
    for (let c = 0; c < this.times.length; c++) this._fillColumn(px, c, C);
    this.ctx2d.putImageData(this.image, 0, 0);
    this.stats.imageBuilds++;
    this._renderLegend();
  }
  _fillColumn(px, c, C) {
    const B = this.bins, f = this.scale.f;
    const cut = this.opts.threshold > 0 ? Math.round(Math.min(1, this.opts.threshold) * 255) : 0;
    for (let b = 0; b < B; b++) {
      const v = this._cellValue(c * B + b);
      let k = 0;
      if (v > 0) k = Math.max(1, Math.min(255, Math.round(f(v) * 255)));
      if (k && k < cut) k = 0;
      const p = ((B - 1 - b) * C + c) * 4; // row 0 of the image is the highest price bin
      px[p] = LUT[k * 4]; px[p + 1] = LUT[k * 4 + 1]; px[p + 2] = LUT[k * 4 + 2]; px[p + 3] = LUT[k * 4 + 3];
    }
  }
  // Repaint one column in place; false when its values overflow the colour scale (full rebuild needed).
  _paintColumn(c) {
    if (!this.image || this.image.width !== Math.max(this.times.length, 1)) return false;
    if (!(this.opts.scaleMax > 0)) {
      const B = this.bins;
      let m = 0;
      for (let b = 0; b < B; b++) { const v = this._cellValue(c * B + b); if (v > m) m = v; }
      if (m > this.maxUsd) return false;
    }
    this._fillColumn(this.image.data, c, this.image.width);
    this.ctx2d.putImageData(this.image, 0, 0, c, 0, 1, this.bins);
    return true;
  }
  _binOf(price) {
    const e = this.edges;
    if (!e || price < e[0] || price >= e[e.length - 1]) return -1;
    let lo = 0, hi = e.length - 1;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (e[mid] <= price) lo = mid; else hi = mid; }
    return lo;
  }
  _columnAtLogical(logical) {
    if (!this.colIndex) return -1;
    // column indexes are ascending; binary search the logical index
    const idx = this.colIndex;
    let lo = 0, hi = idx.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (idx[mid] === logical) return mid;
      if (idx[mid] < logical) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }

  // ---- geometry: runs on scroll/zoom/resize/data change, never per mouse move ----------------------
  _updateGeometry() {
    if (!this.edges || !this.times.length) { this.geom = null; return; }
    const ts = this.chart.timeScale();
    if (this.indexDirty || !this.colIndex) {
      // Logical index of each column's candle (null when the chart has no bar at that time).
      this.colIndex = this.times.map((t) => { const i = ts.timeToIndex(t, false); return i == null ? -1e9 : i; });
      this.indexDirty = false;
    }
    const idx = this.colIndex;
    const x0 = ts.logicalToCoordinate(0), x1 = ts.logicalToCoordinate(1);
    if (x0 == null || x1 == null) { this.geom = null; return; }
    const spacing = x1 - x0;
    const vis = ts.getVisibleLogicalRange();
    const segments = [];
    // Runs of columns on consecutive bars draw as one image slice each (usually the whole set).
    let c = 0;
    const C = this.times.length;
    while (c < C) {
      if (idx[c] < -1e8) { c++; continue; }
      let e = c + 1;
      while (e < C && idx[e] === idx[e - 1] + 1) e++;
      let a = c, z = e; // [a, z)
      if (vis) {
        const from = Math.floor(vis.from) - 1, to = Math.ceil(vis.to) + 1;
        a = Math.max(a, c + Math.max(0, from - idx[c]));
        z = Math.min(z, c + Math.max(0, to - idx[c] + 1));
      }
      if (z > a) {
        const xa = x0 + spacing * idx[a] - spacing / 2;
        const xz = x0 + spacing * idx[z - 1] + spacing / 2;
        segments.push({ c0: a, c1: z, x0: xa, x1: xz });
      }
      c = e;
    }
    // The live book (last column) continues to the right edge: those are the levels standing now.
    const lastSeg = segments[segments.length - 1];
    if (this.opts.extendLive && lastSeg && lastSeg.c1 === C && idx[C - 1] > -1e8) {
      const right = ts.width();
      if (right > lastSeg.x1) segments.push({ c0: C - 1, c1: C, x0: lastSeg.x1, x1: right, alpha: 0.75 });
    }
    const yTop = this.series.priceToCoordinate(this.edges[this.bins]);
    const yBottom = this.series.priceToCoordinate(this.edges[0]);
    if (yTop == null || yBottom == null) { this.geom = null; return; }
    // One drawImage is exact when bins are evenly spaced on screen; check the middle edge.
    const mid = this.bins >> 1;
    const yMid = this.series.priceToCoordinate(this.edges[mid]);
    let rows = null;
    const expected = yBottom + ((yTop - yBottom) * mid) / this.bins;
    if (yMid == null || Math.abs(yMid - expected) > 0.5) {
      rows = new Float64Array(this.bins + 1);
      for (let b = 0; b <= this.bins; b++) rows[b] = this.series.priceToCoordinate(this.edges[b]);
    }
    this.geom = { segments, yTop, yBottom, rows, spacing };
    this._updateProfile();
  }
  _updateProfile() {
    const m = this.mapData;
    if (!m || !this.opts.profile) { this.profile = null; return; }
    const B = m.edges.length - 1;
    const y = new Array(B + 1);
    for (let b = 0; b <= B; b++) y[b] = this.series.priceToCoordinate(m.edges[b]);
    // With one leverage tier chosen, the profile shows that tier too (same colour as in the full stack).
    const tier = String(this.opts.tier);
    const t = tier === "all" ? -1 : /^\d+$/.test(tier) ? Number(tier) : (m.tiers || []).indexOf(tier);
    if (t >= 0 && t < (m.long_tiers || []).length) {
      const pick = (rows) => rows.map((r, i) => (i === t ? r : r.map(() => 0)));
      this.profile = { bins: B, y, long: m.long_tiers[t], short: m.short_tiers[t],
                       longTiers: pick(m.long_tiers), shortTiers: pick(m.short_tiers) };
    } else {
      this.profile = { bins: B, y, long: m.long, short: m.short, longTiers: m.long_tiers, shortTiers: m.short_tiers };
    }
  }

  // ---- DOM: legend and tooltip ---------------------------------------------------------------------
  _makeDom() {
    const host = this.chart.chartElement();
    if (getComputedStyle(host).position === "static") host.style.position = "relative";
    const dom = document.createElement("div");
    dom.className = "liqheat-overlay-dom";
    dom.style.cssText = "position:absolute;left:0;top:0;right:0;bottom:0;pointer-events:none;z-index:3;font:11px system-ui,sans-serif;color:#d8dbe6";
    host.appendChild(dom);
    this.dom = dom;
    if (this.opts.legend) {
      const legend = document.createElement("div");
      legend.className = "liqheat-legend";
      legend.style.cssText = "position:absolute;left:8px;top:8px;background:rgba(12,14,22,0.78);border:1px solid rgba(255,255,255,0.12);border-radius:4px;padding:6px 8px;min-width:190px";
      dom.appendChild(legend);
      this.legendEl = legend;
    }
    if (this.opts.tooltip) {
      const tip = document.createElement("div");
      tip.className = "liqheat-tooltip";
      tip.style.cssText = "position:absolute;display:none;background:rgba(12,14,22,0.92);border:1px solid rgba(255,255,255,0.2);border-radius:4px;padding:6px 8px;white-space:nowrap;line-height:1.45";
      dom.appendChild(tip);
      this.tipEl = tip;
    }
    this._renderLegend();
  }
  _renderLegend() {
    const el = this.legendEl;
    if (!el) return;
    const top = this.maxUsd;
    const sc = makeScale(this.opts.scale, top);
    const stops = [];
    for (let i = 0; i <= 10; i++) {
      const k = Math.round((i / 10) * 255);
      stops.push(`rgba(${LUT[k * 4]},${LUT[k * 4 + 1]},${LUT[k * 4 + 2]},${Math.max(LUT[k * 4 + 3] / 255, i ? 0.35 : 0.05)}) ${i * 10}%`);
    }
    const ticks = top > 0
      ? [0.25, 0.5, 0.75, 1].map((t) => `<span style="position:absolute;left:${t * 100}%;transform:translateX(-${t === 1 ? 100 : 50}%)">${formatUsd(sc.inv(t))}</span>`).join("")
      : `<span style="position:absolute;left:0">nothing in this price range</span>`;
    const o = this.opts;
    const status = this.status || "";
    el.innerHTML =
      `<div style="display:flex;justify-content:space-between;gap:8px"><b style="color:#fde725">Estimated</b>` +
      `<span style="opacity:.75">${escapeHtml(o.symbol)} · ${escapeHtml(o.timeframe)} · tier ${escapeHtml(String(o.tier))} · ${escapeHtml(o.scale)}</span></div>` +
      `<div style="margin:4px 0 2px;height:9px;border-radius:2px;background:linear-gradient(90deg,${stops.join(",")})" data-role="ramp"></div>` +
      `<div style="position:relative;height:13px;opacity:.85">${ticks}</div>` +
      `<div style="opacity:.6;margin-top:2px">USD that would be liquidated per cell (model estimate)${status && status !== "live" && status !== "demo" ? " · " + escapeHtml(status) : ""}</div>`;
  }
  _hover(param) {
    const tip = this.tipEl;
    this.lastHover = param;
    this._emit("hover", param);
    if (!tip) return;
    if (!param || !param.point || !this.edges) { tip.style.display = "none"; return; }
    const cell = this.cellAt(param.point.x, param.point.y);
    if (!cell || (!(cell.longUsd > 0) && !(cell.shortUsd > 0))) { tip.style.display = "none"; return; }
    const when = new Date(cell.time * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
    const mix = this._tierMix(cell);
    tip.innerHTML =
      `<div style="opacity:.7">${when}</div>` +
      `<div>${formatPrice(cell.priceLow)} – ${formatPrice(cell.priceHigh)}</div>` +
      `<div><span style="color:#ff8fa3">longs</span> ${formatUsd(cell.longUsd)} · <span style="color:#6fe3d3">shorts</span> ${formatUsd(cell.shortUsd)}</div>` +
      (mix ? `<div style="opacity:.8">${mix}</div>` : "") +
      `<div style="opacity:.5">estimated</div>`;
    const host = this.dom.getBoundingClientRect();
    let x = param.point.x + 14, y = param.point.y + 14;
    tip.style.display = "block";
    if (x + tip.offsetWidth > host.width) x = param.point.x - tip.offsetWidth - 14;
    if (y + tip.offsetHeight > host.height) y = param.point.y - tip.offsetHeight - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
    this._fetchTierMix(cell);
  }
  _tierMix(cell) {
    const key = `${cell.time}:${cell.bin}`;
    const got = this.mixCache && this.mixCache.get(key);
    if (!got) return "tier mix: …";
    const total = got.long_usd.map((v, i) => v + got.short_usd[i]);
    const sum = total.reduce((a, b) => a + b, 0);
    if (!(sum > 0)) return "";
    return got.tiers.map((t, i) => `${t} ${Math.round((100 * total[i]) / sum)}%`).join(" · ");
  }
  _fetchTierMix(cell) {
    const key = `${cell.time}:${cell.bin}`;
    this.mixCache = this.mixCache || new Map();
    if (this.mixCache.has(key) || this.mixPending === key) return;
    this.mixPending = key;
    clearTimeout(this.mixTimer);
    this.mixTimer = setTimeout(async () => {
      const q = new URLSearchParams({ symbol: this.opts.symbol, timeframe: this.opts.timeframe, time: cell.time,
                                      price_low: cell.priceLow, price_high: cell.priceHigh });
      try {
        const r = await fetch(this._base() + "/api/v1/heatmap/cell?" + q);
        const j = await r.json();
        if (!j.error) {
          if (this.mixCache.size > 500) this.mixCache.clear();
          this.mixCache.set(key, j);
          const current = this.tipEl && this.tipEl.style.display === "block";
          if (current && this.lastHover) this._hover(this.lastHover);
        }
      } catch (e) { /* the tooltip keeps its USD figures */ }
      if (this.mixPending === key) this.mixPending = null;
    }, 120);
  }
}

// A server `bar` is an upsert by time; Lightweight Charts appends or replaces the last bar, and needs
// `historicalUpdate` for an older one (a closed candle finalised just after a newer snapshot).
export function upsertCandle(series, m) {
  const bar = { time: m.time, open: m.open, high: m.high, low: m.low, close: m.close };
  const last = series.dataByIndex(1e9, -1); // MismatchDirection.NearestLeft: the newest bar
  if (!last || m.time >= last.time) series.update(bar);
  else {
    try { series.update(bar, true); } catch (e) { /* a bar the chart never had: nothing to correct */ }
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export function attachLiquidationHeatmap(chart, candleSeries, options) {
  return new LiquidationHeatmap(chart, candleSeries, options);
}

export { LiquidationHeatmap, makeScale, decodeInto };
