"""Checkpoints under concurrency: readers polling a live run, several recoverers at once."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from ebgen.checkpoint import (load_checkpoint, load_trainer_state, read_meta, recover,
                              save_checkpoint)
from ebgen.presets import preset_config
from ebgen.models import build_models

EBGEN = [sys.executable, "-m", "ebgen.cli.main"]


def _nets_at(step: float):
    config = preset_config("tiny")
    energy, generator = build_models(config.model)
    with torch.no_grad():
        for p in [*energy.parameters(), *generator.parameters()]:
            p.fill_(step)
    return config, energy, generator


def _values(*modules) -> set[float]:
    return {float(v) for m in modules for p in m.parameters() for v in p.detach().flatten()[:1]}


def test_readers_polling_a_live_run_neither_break_it_nor_see_mixed_files(tmp_path):
    config, energy, generator = _nets_at(0)
    save_checkpoint(tmp_path, config, energy, generator, 0, trainer_state={})
    errors, done = [], threading.Event()

    def write() -> None:
        try:
            for step in range(1, 81):
                _, e, g = _nets_at(step)
                save_checkpoint(tmp_path, config, e, g, step, trainer_state={})
        except Exception as error:  # reported below: the writer must never fail
            errors.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set():
        _, e, g, meta = load_checkpoint(tmp_path)
        assert _values(e, g) == {float(meta["step"])}  # config and weights of one save
        state = load_trainer_state(tmp_path)
        assert state["step"] >= meta["step"]  # the same save or a later one
        reads += 1
    writer.join()
    assert not errors, errors
    assert reads > 5 and read_meta(tmp_path)["step"] == 80
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / ".commit").exists()


def _interrupted_save(directory, step: int, committed: bool, legacy: bool = False) -> None:
    """A save of nets filled with `step`, killed after staging (and committing, if asked).

    `legacy`: staged under the fixed names, with the names-only marker, of ebgen 0.1.0."""
    config, energy, generator = _nets_at(step)
    save_checkpoint(directory, config, energy, generator, step, trainer_state={})
    names = ["energy.safetensors", "generator.safetensors", "config.json", "trainer_state.pt"]
    suffix = ".tmp" if legacy else f".{step}-abcd1234.tmp"
    for name in names:
        os.replace(directory / name, directory / (name + suffix))
    old_config, old_energy, old_generator = _nets_at(step - 1)
    save_checkpoint(directory / "old", old_config, old_energy, old_generator, step - 1, {})
    for path in (directory / "old").iterdir():
        os.replace(path, directory / path.name)
    (directory / "old").rmdir()
    if committed:
        marker = names if legacy else {"save": f"{step}-abcd1234", "files": names}
        (directory / ".commit").write_text(json.dumps(marker))


@pytest.mark.parametrize("committed,legacy", [(True, False), (False, False), (True, True)])
def test_readers_see_the_last_committed_save_of_a_killed_writer_and_change_nothing(
        tmp_path, committed, legacy):
    _interrupted_save(tmp_path, 7, committed, legacy)
    listing = sorted(p.name for p in tmp_path.iterdir())
    _, energy, generator, meta = load_checkpoint(tmp_path)
    expected = 7 if committed else 6
    assert meta["step"] == load_trainer_state(tmp_path)["step"] == expected
    assert _values(energy, generator) == {float(expected)}
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # a reader never writes


def test_a_reader_that_resolved_a_pending_save_never_opens_the_next_saves_staging(
        tmp_path, monkeypatch):
    """The race CI once hit: a reader picks the staged files of a committed save; before it opens
    them the writer renames them into place and starts staging the next save, half-written."""
    import ebgen.checkpoint as checkpoint
    _interrupted_save(tmp_path, 7, committed=True)
    resolve = checkpoint._committed_files
    calls = []

    def resolve_then_let_the_writer_run(directory):
        files = resolve(directory)
        if not calls:
            recover(directory)  # the writer finishes save 7 ...
            for name in ("energy.safetensors", "generator.safetensors", "config.json"):
                (directory / f"{name}.8-0000ffff.tmp").write_bytes(b"half a")  # ... starts 8
        calls.append(files)
        return files

    monkeypatch.setattr(checkpoint, "_committed_files", resolve_then_let_the_writer_run)
    _, energy, generator, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 7 and _values(energy, generator) == {7.0}
    assert calls[0]["energy.safetensors"].name.endswith(".tmp") and len(calls) == 2


def test_several_processes_recovering_one_interrupted_save_all_succeed(tmp_path):
    for attempt in range(30):
        directory = tmp_path / str(attempt)
        directory.mkdir()
        _interrupted_save(directory, 7, committed=True)
        errors = []

        def run() -> None:
            try:
                recover(directory)
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"attempt {attempt}: {errors}"
        _, energy, generator, meta = load_checkpoint(directory)
        assert meta["step"] == 7 and _values(energy, generator) == {7.0}
        assert not list(directory.glob("*.tmp"))


@pytest.mark.slow
def test_training_survives_a_reader_polling_its_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(EBGEN + ["train", "--preset", "tiny", "--steps", "300",
                                     "--checkpoint-every", "2", "--sample-every", "1000",
                                     "--quiet", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reads = 0
    while proc.poll() is None:
        if (out / "config.json").exists():
            read_meta(out)
            load_checkpoint(out)
            reads += 1
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    assert reads > 10 and read_meta(out)["step"] == 300


def test_a_tampered_trainer_state_is_refused_in_one_line(tmp_path):
    import pickle

    from ebgen.errors import CheckpointError

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    config, energy, generator = _nets_at(1)
    save_checkpoint(tmp_path, config, energy, generator, 1, trainer_state={})
    (tmp_path / "trainer_state.pt").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_trainer_state(tmp_path)
    assert "cannot resume from" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
    result = subprocess.run(EBGEN + ["train", "--out", str(tmp_path), "--resume", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot resume from" in result.stderr
