"""Kill training at random moments while a reader polls the run; count clean resumes.

Each round starts (or resumes) `ebgen train --preset tiny` with a checkpoint every step, polls
the run from this process at about 50 Hz the way `ebgen eval`/`export`/`serve RUN_DIR` read it
(`read_meta` + `load_checkpoint` + `load_trainer_state`), SIGKILLs the trainer at a random
moment, then checks the directory: one loadable save whose config, weights and trainer state
all carry the same step, no stray temporary files once resumed. A final resume must run to the
end. Issue 15's goal: 20/20 clean, no mixed files, no reader error.

    python benchmarks/crash_resume.py --rounds 20
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def poll(out: Path, stop: threading.Event, errors: list[str], reads: list[int]) -> None:
    """Read the run like every reader does, until `stop`; record anything that goes wrong."""
    from ebgen.checkpoint import load_checkpoint, load_trainer_state, read_meta

    while not stop.is_set():
        if (out / "config.json").exists():
            try:
                step = read_meta(out)["step"]
                _, _, _, meta = load_checkpoint(out)
                state = load_trainer_state(out)
                if meta["step"] < step or state["step"] < meta["step"]:
                    errors.append(f"steps went back: {step}, {meta['step']}, {state['step']}")
                reads.append(meta["step"])
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                errors.append(f"{type(e).__name__}: {e}")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from ebgen.checkpoint import load_checkpoint, load_trainer_state, read_meta

    rng = random.Random(args.seed)
    ebgen = [sys.executable, "-m", "ebgen.cli.main", "train"]
    clean, errors, reads = 0, [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        stop = threading.Event()
        reader = threading.Thread(target=poll, args=(out, stop, errors, reads), daemon=True)
        reader.start()
        for round_ in range(args.rounds):
            resume = ["--resume"] if (out / "config.json").exists() else []
            before = read_meta(out)["step"] if resume else 0
            proc = subprocess.Popen(ebgen + ["--preset", "tiny", "--steps", "100000",
                                             "--checkpoint-every", "1", "--sample-every",
                                             "100000", "--quiet", "--out", str(out), *resume],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.time() + 120  # until this run has saved (torch takes a while to
            while time.time() < deadline and proc.poll() is None:  # import), then a random
                try:                                                # moment into its saves
                    if read_meta(out)["step"] > before:
                        break
                except Exception:  # noqa: BLE001 - no checkpoint yet
                    pass
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            died = proc.poll()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            try:
                _, _, _, meta = load_checkpoint(out)
                ok = died is None and load_trainer_state(out)["step"] == meta["step"] \
                    == read_meta(out)["step"] > 0
            except Exception as e:  # noqa: BLE001
                ok, meta = False, {"step": f"unreadable: {e}"}
            clean += ok
            print(f"round {round_ + 1:2d}: killed at step {meta['step']}, "
                  f"{'clean' if ok else 'NOT CLEAN'}", flush=True)
        final = subprocess.run(ebgen + ["--out", str(out), "--resume", "--steps",
                                        str(read_meta(out)["step"] + 5), "--quiet"],
                               capture_output=True, text=True)
        stop.set()
        reader.join(5)
        leftovers = [p.name for p in out.glob("*.tmp")]
    print(f"\n{clean}/{args.rounds} kills left a clean, consistent checkpoint; final resume "
          f"{'ran to the end' if final.returncode == 0 else 'FAILED: ' + final.stderr[-300:]}; "
          f"{len(reads)} reads by the poller, {len(errors)} reader errors"
          f"{': ' + '; '.join(errors[:3]) if errors else ''}; temp files after the final "
          f"resume: {leftovers or 'none'}")


if __name__ == "__main__":
    main()
