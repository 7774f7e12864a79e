"""No server outlives `ebgen serve`: SIGKILL of the launcher stops TorchServe, SIGKILL of a
multi-worker HTTP master stops its workers and removes their metrics folder."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import free_port, wait_until

httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")
EBGEN = [sys.executable, "-m", "ebgen.cli.main"]


def _family(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _gone(processes) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


@pytest.mark.slow
def test_killing_the_http_master_stops_its_workers(tiny_model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(EBGEN + ["serve", str(tiny_model_dir), "--port", str(port),
                                     "--workers", "2", "--device", "cpu"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200,
                   90)
        workers = _family(proc.pid)
        assert workers and list(tmp_path.glob("ebgen-metrics-*"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_until(lambda: _gone(workers), 30)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/v2/health/live", timeout=2)
        assert not list(tmp_path.glob("ebgen-metrics-*"))
    finally:
        for p in _family(proc.pid):
            p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.torchserve
@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGHUP])
def test_killing_the_launcher_stops_torchserve(tiny_model_dir, tmp_path, how):
    pytest.importorskip("ts")
    port = free_port(5)
    proc = subprocess.Popen(EBGEN + ["serve", str(tiny_model_dir), "--engine", "torchserve",
                                     "--port", str(port), "--workdir", str(tmp_path / "ts"),
                                     "--no-auth"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ping = f"http://127.0.0.1:{port}/ping"
    try:
        wait_until(lambda: proc.poll() is None and httpx.get(ping, timeout=2).status_code == 200,
                   150)
        torchserve = _family(proc.pid)
        assert any("java" in p.name() for p in torchserve)
        proc.send_signal(how)
        proc.wait(60)
        wait_until(lambda: _gone(torchserve), 40)
        with pytest.raises(httpx.TransportError):
            httpx.get(ping, timeout=2)
    finally:
        for p in _family(proc.pid):
            p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_alive_tells_a_running_process_from_a_reaped_one():
    """What lets a worker orphaned while starting (its supervisor already gone) stop at once."""
    from ebgen.serve import lifeline

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert lifeline.alive(os.getpid()) and not lifeline.alive(child.pid)
