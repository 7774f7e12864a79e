"""The REST routes `POST /generate` and `POST /score` (the bodies of TorchServe's handlers,
`ebgen.serve.service`), as plain ASGI in front of the FastAPI app.

These two carry the traffic, and for a small request FastAPI's routing, request objects and
dependency solving cost more than the model itself (README "Serving speed"); the v2 protocol,
health and metrics stay on FastAPI's routes. Answers and errors are the same as everywhere:
a bad request gets its one-line JSON 4xx, a wrong method a 405.

Cheap work stays on the event loop, costly work goes to a thread: `.npy` bodies are decoded
and encoded inline (a header and one copy), PNG and JSON bodies off the loop.
"""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import codecs, service
from .backend import Backend
from .validation import RequestError

#: .npy score bodies up to this size are decoded on the event loop.
INLINE_DECODE_BYTES = 1 << 20
#: .npy answers up to this size are encoded on the event loop.
INLINE_ENCODE_BYTES = 1 << 20
#: The scope key naming the endpoint a request went to (for /metrics).
ENDPOINT_KEY = "ebgen.endpoint"


class RestRoutes:
    """ASGI middleware answering `POST /generate` and `POST /score`; everything else goes on
    to `app`."""

    def __init__(self, app: Any, backend: Backend) -> None:
        self.app, self.backend = app, backend
        self.routes = {"/generate": self.generate, "/score": self.score}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = self.routes.get(scope.get("path")) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        scope[ENDPOINT_KEY] = scope["path"]
        try:
            if scope["method"] != "POST":
                raise RequestError(405, "Method Not Allowed")
            reply = await route(Request(scope, receive))
        except RequestError as err:
            reply = service.Reply.error(err)
        await send_reply(send, reply)

    async def generate(self, request: Request) -> service.Reply:
        backend = self.backend
        params = service.parse_generate(await backend.body(request), backend.limits)
        z = (await run_in_threadpool(service.latents_for, backend.model, params)
             if params.refine_steps else service.latents_for(backend.model, params))
        x = await backend.run("generator", request, z)
        if params.format == "npy" and x.nbytes <= INLINE_ENCODE_BYTES:
            return service.encode_generate(backend.model, params, x)
        return await run_in_threadpool(service.encode_generate, backend.model, params, x)

    async def score(self, request: Request) -> service.Reply:
        backend = self.backend
        body = await backend.body(request)
        if codecs.sniff(body) == "npy" and len(body) <= INLINE_DECODE_BYTES:
            x = service.decode_score_request(body, backend.model, backend.limits)
        else:  # images and JSON decode off the loop, which keeps answering health checks
            x = await run_in_threadpool(service.decode_score_request, body, backend.model,
                                        backend.limits)
        energies = await backend.run("energy", request, x)
        return service.Reply.json(service.score_result(backend.model, energies))


async def send_reply(send: Any, reply: service.Reply) -> None:
    """`reply` as one ASGI response."""
    headers = [(b"content-type", reply.content_type.encode()),
               (b"content-length", str(len(reply.body)).encode())]
    headers += [(k.lower().encode(), str(v).encode()) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
