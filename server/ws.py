"""The WebSocket endpoint ``/api/v1/ws`` of the one-process server (protocol: server/PROTOCOL.md): a
subscribe names a market this process computes. The session itself (limits, queues, other ops) is
server/sessions.py's, shared with the cluster replica."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.service import UnknownSymbol

from .api import view_spec
from .live import LiveHub
from .markets import dumps
from .params import BadRequest, Query
from .sessions import Connection, Subscriber, serve_session, subscription_id
from .state import CONFIG, LIVE, MARKETS


async def handle(request: web.Request) -> web.StreamResponse:
    live = request.app[LIVE]
    return await serve_session(request, live, lambda: [s.market.key for s in request.app[MARKETS].services()],
                               lambda conn, m: _subscribe(request, live, conn, m))


class _Params(dict[str, str]):
    """Subscribe fields as a query-string-like mapping, so the REST validators apply unchanged."""


def _subscribe(request: web.Request, live: LiveHub, conn: Connection, m: dict[str, Any]) -> None:
    cfg = request.app[CONFIG]
    sid = subscription_id(conn, m, cfg.max_subscriptions)
    fields = _Params()
    for k, v in m.items():
        if k in ("op", "id") or v is None:
            continue
        if isinstance(v, bool):
            fields[k] = "true" if v else "false"
        elif isinstance(v, (int, float, str)):
            fields[k] = str(v)
        else:
            raise BadRequest(f"{k} must be a string or a number")
    q = Query(fields)
    symbol = q.required("symbol")
    try:
        svc = request.app[MARKETS].resolve(symbol)
    except UnknownSymbol as exc:
        raise BadRequest(str(exc)) from None
    spec = view_spec(svc, q, cfg.default_bins, cfg.default_columns)
    q.done()
    channel = live.channel(svc)
    view = channel.view_for(spec)
    sub = Subscriber(sid, conn, channel, view)
    conn.subs[sid] = sub
    channel.add(sub)
    conn.send(dumps({"type": "subscribed", "sub": sid, "symbol": svc.market.key, "timeframe": spec.timeframe,
                     "tier": "all" if spec.tier is None else svc.params.ladder.labels[spec.tier], "bins": spec.bins,
                     "columns": spec.columns}))
    channel.request_snapshot(sub, "subscribe")
