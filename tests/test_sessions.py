"""ebgen.sessions: every onnxruntime session is set up for serving beside other work (all graph
optimisations, one inter-op thread, no spinning, the threads asked for), and serving workers
share the cores out."""
from __future__ import annotations

import onnxruntime as ort
import pytest

from ebgen import resolve_model_path
from ebgen.sessions import THREADS_ENV, available_cores, ort_session, serving_threads


def test_sessions_do_not_spin_and_take_the_threads_asked_for():
    session = ort_session(resolve_model_path("ring") / "energy.onnx", threads=1)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_serving_threads_share_the_cores_and_obey_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    cores = available_cores()
    assert serving_threads(1) == cores
    assert serving_threads(cores * 4) == 1          # never zero
    assert serving_threads(2) == max(1, cores // 2)
    monkeypatch.setenv(THREADS_ENV, "3")
    assert serving_threads(1) == 3
    monkeypatch.setenv(THREADS_ENV, "many")        # unreadable: the default again
    assert serving_threads(1) == cores


@pytest.mark.parametrize("threads", [1, 2])
def test_load_model_passes_threads_to_both_sessions(threads):
    from ebgen import load_model

    model = load_model("ring", device="cpu", threads=threads)
    for net in (model._generator, model._energy):
        assert net.session.get_session_options().intra_op_num_threads == threads
