"""The Dockerfile, replayed without Docker: its COPY, `RUN pip install` and CMD steps in a fresh
venv (no system site-packages), then its HEALTHCHECK and real requests against the server; and
the GPU variant's install (RUNTIME=gpu) resolved by pip, as far as a machine without CUDA allows.

System steps (apt-get, the venv, useradd) are not replayed: the test makes its own venv and
needs Java 17 already, like the image. The torch index is overridden to PyPI (`TORCH_INDEX`),
the only index reachable here.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
pytestmark = [pytest.mark.slow, pytest.mark.torchserve,
              pytest.mark.skipif(not DOCKERFILE.is_file() or os.environ.get("EBGEN_TEST_INSTALLED")
                                 == "1", reason="needs the source checkout"),
              pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")]
OVERRIDES = {"TORCH_INDEX": "https://pypi.org/simple"}


def parse(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuations joined."""
    steps, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            steps.append((word.upper(), rest.strip()))
            current = ""
    return steps


def test_dockerfile_shape():
    steps = parse(DOCKERFILE)
    kinds = [k for k, _ in steps]
    assert steps[0] == ("ARG", "BASE=python:3.11-slim") and steps[1] == ("FROM", "${BASE}")
    assert "RUNTIME=cpu" in [a for k, a in steps if k == "ARG"]
    assert any('.[$RUNTIME,serve,torchserve]' in a for k, a in steps if k == "RUN")
    assert any("openjdk-17-jre-headless" in a for k, a in steps if k == "RUN")
    assert any("torch==2.13.0" in a and "$TORCH_INDEX" in a for k, a in steps if k == "RUN")
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[:2] == ["ebgen", "serve"] and "--engine" not in cmd  # the HTTP service
    assert torchserve_command()[:4] == ["ebgen", "serve", "--engine", "torchserve"]
    assert environment(steps)["EBGEN_MODEL"] == "mnist"  # the bundled model, no COPY needed
    assert "HEALTHCHECK" in kinds and "USER" in kinds


def torchserve_command() -> list[str]:
    """The TorchServe command the Dockerfile's header documents (`docker run ... ebgen CMD`)."""
    for line in DOCKERFILE.read_text().splitlines():
        found = re.search(r"docker run (?:-p \S+ )*ebgen (ebgen serve --engine torchserve .*)$",
                          line)
        if found:
            return shlex.split(found.group(1))
    raise AssertionError("the Dockerfile documents no TorchServe command")


def environment(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The variables the Dockerfile's ENV steps set (KEY=VALUE form), but PATH: the image's
    venv is the test's own."""
    pairs = (pair.split("=", 1) for kind, arg in steps if kind == "ENV"
             for pair in shlex.split(arg))
    return {key: value for key, value in pairs if key != "PATH"}


def build_args(steps: list[tuple[str, str]], **overrides: str) -> dict[str, str]:
    """The ARG defaults, then this machine's `OVERRIDES`, then `overrides`."""
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    return {**args, **OVERRIDES, **overrides}


def pip_steps(steps: list[tuple[str, str]]) -> list[str]:
    return [arg for kind, arg in steps if kind == "RUN" and arg.startswith("pip install")]


def test_gpu_variant_resolves_to_onnxruntime_gpu_alone(tmp_path):
    """`--build-arg RUNTIME=gpu`: every pip step of the image resolves (pip --dry-run, in a
    fresh venv), and the environment gets onnxruntime-gpu, never onnxruntime beside it."""
    steps = parse(DOCKERFILE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({**build_args(steps, RUNTIME="gpu"), **environment(steps),
                "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"})
    installed = set()
    for i, arg in enumerate(pip_steps(steps)):
        report = tmp_path / f"report{i}.json"
        done = subprocess.run(f"{arg} --dry-run --quiet --report {report}", shell=True,
                              cwd=ROOT, env=env, timeout=600, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        installed |= {item["metadata"]["name"].lower()
                      for item in json.loads(report.read_text())["install"]}
    assert {"onnxruntime-gpu", "torch", "fastapi", "torchserve"} <= installed
    assert "onnxruntime" not in installed


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The image's install replayed: (env, workdir, steps) of a fresh venv."""
    tmp_path = tmp_path_factory.mktemp("image")
    steps = parse(DOCKERFILE)
    args = build_args(steps)
    context, workdir = tmp_path / "opt-ebgen", tmp_path / "srv"
    context.mkdir()
    workdir.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({**args, **environment(steps), "PIP_NO_CACHE_DIR": "1",
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"})
    for kind, arg in steps:
        if kind == "COPY":
            *sources, dst = shlex.split(arg)
            target = context / dst
            for src in sources:
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, target if len(sources) == 1 else target / src,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, target)
        elif kind == "RUN" and arg in pip_steps(steps):
            done = subprocess.run(arg, shell=True, cwd=context, env=env, timeout=600,
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import_check = subprocess.run([str(bin_dir / "python"), "-c", "import ebgen, torch, ts, "
                                   "fastapi; print(ebgen.__file__, torch.__version__)"],
                                  env=env, cwd=workdir, capture_output=True, text=True,
                                  timeout=120)
    assert "site-packages" in import_check.stdout and "2.13.0" in import_check.stdout
    return env, workdir, steps


@contextlib.contextmanager
def started(command: list[str], image, log_path: Path):
    """`command` as the container would start it (its words mapped onto this machine), until
    healthy by the Dockerfile's HEALTHCHECK; yields the inference port. Stopped as
    `docker stop` does, with SIGTERM (not SIGINT: a shell that runs the suite in the background
    starts it with SIGINT ignored)."""
    env, workdir, steps = image
    port = free_port(5)
    words = {"0.0.0.0": "127.0.0.1", "8080": str(port), "/srv/torchserve": str(workdir)}
    cmd = [words.get(word, word) for word in command]
    check = json.loads(re.sub(r"^.*?CMD\s+", "", dict(steps)["HEALTHCHECK"]))
    check = [re.sub(r"'/srv/torchserve', 8080", f"'{workdir}', {port}", w) for w in check]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            return subprocess.run(check, env=env, cwd=workdir, timeout=30).returncode == 0

        wait_until(healthy, timeout=180, every=2.0)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
        log.close()
    # TorchServe's launcher exits 0; uvicorn shuts down gracefully, then re-raises the SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), log_path.read_text()[-3000:]


def test_replay_install_and_default_start_the_http_service(image, tmp_path):
    httpx = pytest.importorskip("httpx")
    with started(json.loads(dict(image[2])["CMD"]), image, tmp_path / "serve.log") as port:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/generate", json={"num_samples": 4, "seed": 1, "format": "json"},
                       timeout=60)
        assert r.status_code == 200 and len(r.json()["images"]) == 4  # bundled mnist digits
        assert r.json()["shape"][-2:] == [28, 28]
        r = httpx.post(f"{base}/score", json={"instances": r.json()["images"]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["energy"]) == 4
        assert httpx.post(f"{base}/score", content=b"{", timeout=60, headers={
            "Content-Type": "application/json"}).status_code == 400
        assert httpx.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}


def test_replay_the_documented_torchserve_start(image, tmp_path):
    httpx = pytest.importorskip("httpx")
    workdir = image[1]
    with started(torchserve_command(), image, tmp_path / "serve.log") as port:
        token = json.loads((workdir / "key_file.json").read_text())["inference"]["key"]
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/predictions"
        r = httpx.post(f"{base}/generate", json={"num_samples": 4, "seed": 1, "format": "json"},
                       headers=auth, timeout=60)
        assert r.status_code == 200 and len(r.json()["images"]) == 4
        r = httpx.post(f"{base}/score", json={"instances": r.json()["images"]}, headers=auth,
                       timeout=60)
        assert r.status_code == 200 and len(r.json()["energy"]) == 4
        # the launcher's own readiness check (both models answer) completes too
        wait_until(lambda: "TorchServe ready" in (tmp_path / "serve.log").read_text(), 120)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and all its descendants, TorchServe's java (its own session) included,
    so a failed test cannot leave a TorchServe behind to block the next one."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(10)
