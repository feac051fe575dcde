"""A bare aiohttp server: the yardstick of P1 (one JSON request parsed and answered) and
of P4 (what aiohttp itself keeps per open WebSocket).

``python -m gateway.bench.baseline PORT`` serves on 127.0.0.1:PORT:

* ``POST /echo``: parses the JSON body and answers a small JSON object, nothing else (no
  auth, no journal);
* ``GET /v1/agents/{id}/ws``: a WebSocket with aiohttp's own reader and heartbeat, set up
  as the gateway set up a desktop's before the desktop socket left aiohttp (same heartbeat
  and message size limit; aiohttp's route still serves a desktop on a keep-alive connection
  it owns), that sends a small ``hello`` and echoes what it receives: nothing of the
  gateway's (no auth, hub, outbox, engine).

``--loop uvloop`` (what ``cti-gateway run`` uses; P4 runs it on the gateway's loop) or
``--loop asyncio`` (the default: P1's yardstick).
"""

from __future__ import annotations

import json
import sys

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response({"decision": "assigned", "event_id": body.get("event_id")})


#: the gateway's defaults for a desktop socket (gateway.api.context.ApiSettings; not imported:
#: this process holds nothing of the gateway)
HEARTBEAT_S = 20.0
MAX_MSG_SIZE = 64 * 1024


async def desktop(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MSG_SIZE)
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "hello", "agent": {"id": request.match_info["id"]}}))
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0])
    loop = args[args.index("--loop") + 1] if "--loop" in args else "asyncio"
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/agents/{id}/ws", desktop)
    if loop == "uvloop":
        import uvloop

        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())
    else:
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
