"""Serving needs no torch: `pip install ".[cpu,serve]"` in a fresh venv generates, scores and
serves the bundled models with neither torch nor matplotlib installed, and the verbs that do
need torch say which extra to install."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("EBGEN_TEST_INSTALLED") == "1"
                                 or not (ROOT / "pyproject.toml").is_file(),
                                 reason="needs the source checkout")]


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def test_serving_install_has_no_torch_and_serves(tmp_path):
    httpx = pytest.importorskip("httpx")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", "runs", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([str(bin_dir / "pip"), "install", "-q", ".[cpu,serve]"], cwd=source,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = lambda *args: subprocess.run([str(bin_dir / "ebgen"), *args], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, timeout=300)
    absent = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], env=env,
                            capture_output=True, text=True)
    assert absent.returncode != 0 and "torch" in absent.stderr
    assert run("generate", "ring", "-n", "8", "--out", "ring.npy").returncode == 0
    scored = run("score", "ring", "ring.npy")
    assert scored.returncode == 0 and "energy" in scored.stdout
    assert run("generate", "-n", "4", "--out", "digits.png").returncode == 0  # bundled mnist
    refused = run("train", "--preset", "tiny", "--out", "run")
    assert refused.returncode == 2 and "pip install 'ebgen[train]'" in refused.stderr
    assert "Traceback" not in refused.stderr
    port = free_port()
    proc = subprocess.Popen([str(bin_dir / "ebgen"), "serve", "ring", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is None and httpx.get(f"{base}/v2/health/ready",
                                                             timeout=2).status_code == 200, 90)
        r = httpx.post(f"{base}/generate", json={"num_samples": 3, "format": "json"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["samples"]) == 3
    finally:
        stop_process(proc)
    print(f"serving venv: {_size_mb(venv):.0f} MB")  # README "Serving without torch"
