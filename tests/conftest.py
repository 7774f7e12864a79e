"""Shared fixtures: a trained tiny checkpoint, its model directory, serving helpers.

`tiny_checkpoint` and `tiny_model_dir` are session-scoped: trained and exported once per run
(tiny preset: 8×8 grey images, z_dim 16; about 20 s on 2 cores).
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

# One BLAS thread: on a loaded 2-core machine numpy's threaded SVD runs ~100× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

MNIST = Path(__file__).parent / "data" / "mnist"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A `tiny`-preset checkpoint trained by `ebgen.train.train` (a few dozen steps)."""
    from ebgen.presets import preset_config
    from ebgen.train import train

    path = tmp_path_factory.mktemp("tiny-ckpt") / "tiny"
    train(preset_config("tiny"), path, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """`tiny_checkpoint` exported to a model directory (TorchServe archives when possible)."""
    from ebgen.export import export_model

    path = tmp_path_factory.mktemp("tiny-model") / "tiny"
    export_model(tiny_checkpoint, path, progress=False)
    return path


def free_port(span: int = 1) -> int:
    """A port P with P … P+span−1 all free on 127.0.0.1 right now (TorchServe takes five:
    inference, management, metrics and its two gRPC APIs). The one port helper of the tests."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span > 65536:
            continue
        socks = []
        try:
            for p in range(port + 1, port + span):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {span} consecutive free ports")


def torchserve_config(model_dir, workdir, **options):
    """A `TorchServeConfig` for `model_dir` on five free 127.0.0.1 ports of its own
    (inference, management, metrics and the two gRPC APIs), writing into `workdir`."""
    from ebgen.serve.torchserve import TorchServeConfig

    port = free_port(5)
    return TorchServeConfig(str(model_dir), port=port, management_port=port + 1,
                            metrics_port=port + 2, grpc_inference_port=port + 3,
                            grpc_management_port=port + 4, workdir=str(workdir), **options)


def stop_process(proc, grace: float = 20.0) -> None:
    """Ctrl-C a server started in its own process group; SIGKILL it if it lingers."""
    import os
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_until(check, timeout: float = 60.0, every: float = 0.3):
    """Poll `check()` until it returns a true value (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - server not up yet
            last = err
        time.sleep(every)
    raise TimeoutError(f"not ready after {timeout} s (last error: {last!r})")


@pytest.fixture(scope="session")
def model(tiny_model_dir):
    """The tiny model directory in onnxruntime (CPU), loaded once for every serving test."""
    from ebgen import load_model

    return load_model(tiny_model_dir, device="cpu")


@contextlib.contextmanager
def http_service(model_dir: Path, log_path: Path, *args: str) -> Iterator[str]:
    """`ebgen serve MODEL ARGS` (the HTTP service, CPU) on a free 127.0.0.1 port until ready;
    yields its host:port; stopped with SIGINT (Ctrl-C) at the end."""
    import subprocess
    import sys

    import httpx

    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ebgen.cli.main", "serve", str(model_dir),
                                 "--port", str(port), "--device", "cpu", *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: proc.poll() is None and httpx.get(
                f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200, 90)
            yield f"127.0.0.1:{port}"
        finally:
            stop_process(proc)
    assert proc.returncode is not None


@pytest.fixture(scope="session")
def mnist_digits() -> np.ndarray:
    """8 MNIST test digits as uint8 N×1×8×8 (resized to the tiny model's size)."""
    from ebgen.images import fit_images, read_idx

    digits = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:8][:, None]
    return fit_images(digits, 8, 1)


def bad_requests(model_shape=(1, 8, 8), body_cap: int = 2**20) -> list[tuple]:
    """(name, endpoint, body bytes, content type, expected status) for every bad input."""
    from ebgen.serve import codecs

    c, h, w = model_shape
    png = codecs.encode_png(np.zeros((c, h, w), np.uint8))
    return [
        ("corrupt png", "score", png[:20] + b"garbage" * 4, "image/png", 400),
        ("wrong size", "score", codecs.encode_png(np.zeros((c, h * 2, w * 2), np.uint8)),
         "image/png", 422),
        ("rgb to grey", "score", codecs.encode_png(np.zeros((3, h, w), np.uint8)),
         "image/png", 422),
        ("nan", "score", codecs.encode_npy(np.full((2, c, h, w), np.nan, np.float32)),
         "application/octet-stream", 422),
        ("out of range", "score", codecs.encode_npy(np.full((1, c, h, w), 3.0, np.float32)),
         "application/octet-stream", 422),
        ("too many samples", "generate", b'{"num_samples": 1000000}', "application/json", 422),
        ("oversized body", "score", b"\x93NUMPY" + b"\0" * (body_cap + 10),
         "application/octet-stream", 413),
        ("malformed json", "generate", b'{"num_samples": 4,', "application/json", 400),
        ("malformed json score", "score", b'{"instances": [', "application/json", 400),
        ("nan literal", "score", b'{"instances": [[[NaN]]]}', "application/json", 400),
        ("whitespace past the cap", "generate", b"{" + b" " * (body_cap + 10) + b"}",
         "application/json", 413),
        ("unknown field", "generate", b'{"num_samples": 2, "temperature": 0.5}',
         "application/json", 422),
        ("unknown field score", "score", b'{"instances": [], "labels": [1]}',
         "application/json", 422),
        ("bad format", "generate", b'{"format": "gif"}', "application/json", 422),
        ("too many refine steps", "generate", b'{"num_samples": 1, "refine_steps": 101}',
         "application/json", 422),
        ("zero refine step size", "generate", b'{"refine_steps": 1, "refine_step_size": 0}',
         "application/json", 422),
        ("text refine step size", "generate", b'{"refine_step_size": "big"}',
         "application/json", 422),
        ("fractional refine steps", "generate", b'{"refine_steps": 2.5}', "application/json",
         422),
        ("negative seed", "generate", b'{"seed": -1}', "application/json", 422),
        ("superscript digit seed", "generate", '{"seed": "²"}'.encode(), "application/json", 422),
        ("circled digit count", "generate", '{"num_samples": "①"}'.encode(),
         "application/json", 422),
        ("double minus seed", "generate", b'{"seed": "--5"}', "application/json", 422),
        ("5000-digit seed", "generate", b'{"seed": "' + b"7" * 5000 + b'"}',
         "application/json", 422),
        ("5000-digit integer seed", "generate", b'{"seed": ' + b"7" * 5000 + b'}',
         "application/json", 400),
        ("integer beyond float", "score", b'{"instances": [[[' + b"1" * 400 + b']]]}',
         "application/json", 422),
        ("nested 5000 deep", "generate", b"[" * 5000 + b"]" * 5000, "application/json", 400),
        ("nested 5000 deep score", "score", b'{"instances": ' + b"[" * 5000 + b"]" * 5000
         + b"}", "application/json", 400),
    ]
