"""Health probes of both engines, and the one tiny local HTTP call they and the launcher use.

`healthcheck(workdir, port)` is the Docker HEALTHCHECK of the image, whichever engine runs: it
asks TorchServe's `GET /ping` (with the inference key from `workdir`/key_file.json when token
auth is on) and the HTTP service's `GET /v2/health/ready`, and returns 0 when either answers
healthy. `local_request` is urllib only, so a probe needs nothing installed.

    python -c "import sys; from ebgen.serve.health import healthcheck; sys.exit(healthcheck())"
"""
from __future__ import annotations

import json
from pathlib import Path

#: TorchServe's key file in its working directory (token auth).
KEY_FILE = "key_file.json"


def local_request(method: str, url: str, headers: dict[str, str], body: bytes | None = None,
                  timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request to a local server; (0, b"") when nothing answers."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - local only
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return 0, b""


def read_token(workdir: str | Path, kind: str = "inference") -> str | None:
    """The `kind` key ("inference", "management", "API") from `workdir`/key_file.json."""
    path = Path(workdir) / KEY_FILE
    try:
        keys = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (keys.get(kind) or {}).get("key")


def healthcheck(workdir: str | Path = ".", port: int = 8080, host: str = "127.0.0.1") -> int:
    """0 when the server on `port` answers healthy, else 1 (Docker HEALTHCHECK).

    TorchServe: GET /ping with the inference key from `workdir`/key_file.json when one is
    there (token auth); the HTTP service: GET /v2/health/ready.
    """
    token = read_token(workdir)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path, ok in (("/ping", b'"Healthy"'), ("/v2/health/ready", b'"ready":true')):
        status, body = local_request("GET", f"http://{host}:{port}{path}", headers)
        if status == 200 and ok in body.replace(b" ", b""):
            return 0
    return 1
