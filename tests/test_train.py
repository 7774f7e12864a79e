"""Training, checkpoints, resume (clean and after SIGKILL), DDP under torchrun, CUDA + AMP."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port
from ebgen.checkpoint import (load_checkpoint, load_trainer_state, read_meta, recover,
                              save_checkpoint)
from ebgen.presets import preset_config
from ebgen.errors import CheckpointError, EbgenError
from ebgen.train import Trainer, resume_config, train

EBGEN = [sys.executable, "-m", "ebgen.cli.main"]


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part in ("energy", "generator")
            for k, v in load_file(str(directory / f"{part}.safetensors")).items()}


def test_tiny_training_writes_the_checkpoint_directory(tmp_path):
    result = train(preset_config("tiny", steps=20, sample_every=10), tmp_path, progress=False)
    assert result["step"] == 20
    for name in ("config.json", "energy.safetensors", "generator.safetensors", "trainer_state.pt",
                 "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_0000010.png", "step_0000020.png"]
    meta = read_meta(tmp_path)
    assert meta["step"] == 20 and meta["format"] == "ebgen-checkpoint"
    assert meta["torch_version"] == torch.__version__ and meta["model"]["image_size"] == 8
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20]
    assert {"loss_energy", "loss_generator", "energy_data", "energy_samples", "entropy"} <= set(rows[0])


def test_checkpoint_round_trip(tmp_path):
    train(preset_config("tiny", steps=3), tmp_path, progress=False)
    config, energy, generator, meta = load_checkpoint(tmp_path)
    assert config.preset == "tiny" and meta["step"] == 3
    save_checkpoint(tmp_path / "copy", config, energy, generator, step=3)
    for key, value in _weights(tmp_path).items():
        assert torch.equal(value, _weights(tmp_path / "copy")[key]), key
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    _, energy2, _, _ = load_checkpoint(tmp_path / "copy")
    assert torch.equal(energy(x), energy2(x))
    assert "energy_optimizer" in load_trainer_state(tmp_path)


def test_data_base_is_fitted_on_the_training_data_and_kept_in_the_checkpoint(tmp_path):
    config = preset_config("tiny", steps=2, base="data")
    train(config, tmp_path, progress=False)
    loaded, energy, _, _ = load_checkpoint(tmp_path)
    assert loaded.model.base == "data"
    from ebgen.data import load_data

    data, _ = load_data(config.data, config.model, seed=config.train.seed)
    x = data.batch(torch.arange(len(data))).flatten(1).double()
    assert torch.allclose(energy.base_mean.double(), x.mean(0), atol=1e-5)
    floor = config.model.base_min_variance
    assert torch.allclose(energy.base_precision.double(), 1 / x.var(0, unbiased=False)
                          .clamp_min(floor), rtol=1e-4)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    train(preset_config("tiny", steps=30, checkpoint_every=100), tmp_path / "straight",
          progress=False)
    train(preset_config("tiny", steps=12, checkpoint_every=100), tmp_path / "split",
          progress=False)
    train(resume_config(tmp_path / "split", steps=30), tmp_path / "split", resume=True,
          progress=False)
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert straight.keys() == split.keys()
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    steps = [json.loads(l)["step"] for l in (tmp_path / "split/metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 12, 20, 30]


def test_generator_ema_deploys_the_average_and_resumes_to_the_uninterrupted_run(tmp_path):
    """Issue 18: --generator-ema puts the average of the generator's weights in the checkpoint
    (what export, eval and sample grids use) and keeps the raw weights in the trainer state,
    so a resumed run still ends exactly where the uninterrupted one does."""
    ema = dict(generator_ema=0.9, checkpoint_every=100)
    train(preset_config("tiny", steps=30, **ema), tmp_path / "straight", progress=False)
    train(preset_config("tiny", steps=12, **ema), tmp_path / "split", progress=False)
    train(resume_config(tmp_path / "split", steps=30), tmp_path / "split", resume=True,
          progress=False)
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    raw = load_trainer_state(tmp_path / "straight")["generator_training"]
    _, _, average, _ = load_checkpoint(tmp_path / "straight")
    gaps = [float((average.state_dict()[k] - v.cpu()).abs().max()) for k, v in raw.items()
            if v.is_floating_point() and "running" not in k]
    assert max(gaps) > 1e-4  # the checkpoint holds the average, not the raw weights
    plain = Trainer(preset_config("tiny", steps=1), tmp_path / "plain", progress=False)
    assert plain.average is None and plain.deployed_generator is plain.generator
    with pytest.raises(EbgenError, match="generator_ema is a decay"):
        preset_config("tiny", generator_ema=1.0)


def test_lr_decay_start_keeps_the_rates_then_decays_them_to_zero(tmp_path):
    """Issue 18: --lr-decay-start 0.5 holds both rates for half the steps, then takes them
    linearly to 0 at the last step; 0 (the default) decays from the first step as before."""
    def rates(**fields) -> list[tuple[float, float]]:
        trainer = Trainer(preset_config("tiny", steps=8, lr_decay=True, **fields),
                          tmp_path / str(fields), progress=False)
        seen = []
        for _ in range(8):
            trainer.train_step()
            seen.append((trainer.energy_opt.param_groups[0]["lr"],
                         trainer.generator_opt.param_groups[0]["lr"]))
        return seen

    base = preset_config("tiny").train.lr_energy
    late = [round(e / base, 6) for e, g in rates(lr_decay_start=0.5)]
    assert late == [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    early = [round(e / base, 6) for e, g in rates()]
    assert early == [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    with pytest.raises(EbgenError, match="lr_decay_start is a share"):
        preset_config("tiny", lr_decay=True, lr_decay_start=1.0)
    with pytest.raises(EbgenError, match="needs lr_decay"):
        preset_config("tiny", lr_decay=False, lr_decay_start=0.5)


def test_lazy_r1_runs_every_nth_step_with_n_times_the_weight(tmp_path):
    """--gradient-penalty-every 4: R1 (and its double backward) on steps 0, 4, 8, ... only,
    four times as strong, so the penalty per step is the same on average."""
    config = preset_config("tiny", steps=8, gradient_penalty=0.1, gradient_penalty_every=4)
    trainer = Trainer(config, tmp_path, progress=False)
    with_r1 = [("term_r1" in trainer.train_step()) for _ in range(8)]
    assert with_r1 == [True, False, False, False, True, False, False, False]
    assert [trainer._energy_term_weights().r1 for trainer.step in (0, 1, 4)] == \
        pytest.approx([0.4, 0.0, 0.4])
    every = Trainer(preset_config("tiny", steps=2, gradient_penalty=0.1), tmp_path / "every",
                    progress=False)
    assert all("term_r1" in every.train_step() for _ in range(2))
    with pytest.raises(EbgenError, match="gradient_penalty_every is a number of steps"):
        preset_config("tiny", gradient_penalty_every=0)


def test_fresh_run_refuses_an_existing_checkpoint(tmp_path):
    train(preset_config("tiny", steps=1), tmp_path, progress=False)
    with pytest.raises(EbgenError, match="--resume"):
        Trainer(preset_config("tiny", steps=1), tmp_path)


def test_interrupted_save_is_finished_or_discarded(tmp_path):
    train(preset_config("tiny", steps=2), tmp_path, progress=False)
    before = _weights(tmp_path)
    # A save killed before its commit marker: readers skip the stray temp file and leave it;
    # the writer (here, a resumed run) discards it.
    (tmp_path / "energy.safetensors.tmp").write_bytes(b"half a file")
    assert read_meta(tmp_path)["step"] == 2
    assert (tmp_path / "energy.safetensors.tmp").exists()
    recover(tmp_path)
    assert not (tmp_path / "energy.safetensors.tmp").exists()
    assert all(torch.equal(before[k], v) for k, v in _weights(tmp_path).items())


@pytest.mark.slow
def test_sigkill_at_a_random_moment_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    rng = random.Random(os.getpid())
    for attempt in range(3):
        proc = subprocess.Popen(EBGEN + ["train", "--preset", "tiny", "--steps", "100000",
                                         "--checkpoint-every", "1", "--sample-every", "1000",
                                         "--quiet", "--out", str(out)]
                                + (["--resume"] if (out / "config.json").exists() else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (out / "trainer_state.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        config, _, _, meta = load_checkpoint(out)  # loads cleanly: no corrupt file
        state = load_trainer_state(out)
        assert state["step"] == meta["step"] > 0, f"attempt {attempt}"
    done = subprocess.run(EBGEN + ["train", "--out", str(out), "--resume", "--steps",
                                   str(meta["step"] + 5), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_meta(out)["step"] == meta["step"] + 5


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--energy-members", "2"]], ids=["one", "ensemble"])
def test_torchrun_two_processes_on_cpu(tmp_path, extra):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), "-m", "ebgen.cli.main", "train",
                             "--preset", "tiny", "--steps", "10", "--quiet", "--out", str(out),
                             *extra],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("checkpoint in") == 1  # rank 0 speaks for the run
    assert read_meta(out)["step"] == 10
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [10]  # only rank 0 writes
    _, energy, _, _ = load_checkpoint(out)
    assert not any(k.startswith("module.") for k in energy.state_dict())


def _torchrun(out: Path, *args: str) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 ebgen train --preset tiny ... --auto-resume` (gloo, CPU)."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "ebgen.cli.main", "train", "--preset", "tiny",
         "--steps", "120", "--checkpoint-every", "10", "--sample-every", "1000", "--quiet",
         "--auto-resume", "--out", str(out), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_torchrun_killed_mid_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """Two processes, all killed (as when a node is lost) after a mid-run checkpoint; the same
    command line again (what `torchrun --max-restarts` runs) ends on the same weights."""
    straight = _torchrun(tmp_path / "straight")
    assert straight.wait(300) == 0, straight.stderr.read()[-3000:]
    out = tmp_path / "killed"
    proc = _torchrun(out)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "config.json").exists() and read_meta(out)["step"] >= 20:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
    proc.wait(30)
    killed_at = read_meta(out)["step"]
    assert 20 <= killed_at < 120
    resumed = _torchrun(out)
    assert resumed.wait(300) == 0, resumed.stderr.read()[-3000:]
    assert read_meta(out)["step"] == 120
    want, got = _weights(tmp_path / "straight"), _weights(out)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    rows = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) and rows[-1] == 120  # no step logged twice
    other = subprocess.run(EBGEN + ["train", "--preset", "tiny", "--out", str(out),
                                    "--auto-resume", "--z-dim", "7"],
                           capture_output=True, text=True)
    assert other.returncode == 2 and "--z-dim 7 differs" in other.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_autocast(tmp_path):
    trainer = Trainer(preset_config("tiny", steps=5, device="cuda"), tmp_path, progress=False)
    assert trainer.amp and trainer.device.type == "cuda"
    trainer.fit()
    config, energy, _, _ = load_checkpoint(tmp_path)
    assert torch.isfinite(energy(torch.zeros(2, 1, 8, 8))).all()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_meta(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"format": "ebgen-checkpoint",
                                                      "format_version": 99}))
    with pytest.raises(CheckpointError, match="format version"):
        read_meta(tmp_path)
