"""The HTTP floor for `load.py`: a bare ASGI app under uvicorn, configured as `ebgen serve`
runs it (httptools, uvloop, no access log), that reads each request's body and answers with
canned bytes as long as the real service's answer (an empty 200 on `/ready`): no model, no
checks, no batching.

What it reaches is what HTTP alone costs on this machine; beside the ceiling (the model alone)
it bounds what any Python server of the model could reach: 1 / (1/floor + 1/ceiling).

    EBGEN_FLOOR_SIZES='{"/generate": 50304}' uvicorn floor_app:app --app-dir benchmarks
"""
from __future__ import annotations

import json
import os
from typing import Any

#: Answer bytes by path, from $EBGEN_FLOOR_SIZES (JSON).
SIZES: dict[str, int] = json.loads(os.environ.get("EBGEN_FLOOR_SIZES", "{}"))
_ANSWERS = {path.encode(): b"x" * size for path, size in SIZES.items()}


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = _ANSWERS.get(scope["path"].encode(), b"")
    status = 200 if body or scope["path"] == "/ready" else 404
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
