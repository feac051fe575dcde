"""A bare aiohttp server: the yardstick of P1 (one JSON request parsed and answered).

``python -m gateway.bench.baseline PORT`` serves ``POST /echo`` on 127.0.0.1:PORT: it parses
the JSON body and answers a small JSON object, nothing else (no auth, no journal).
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response({"decision": "assigned", "event_id": body.get("event_id")})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0])
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
