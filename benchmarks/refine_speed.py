"""What refined samples cost: latent-space MALA in onnxruntime against PyTorch and against raw.

For each model and batch size, side by side in one process on the same latents and seed:
raw generation (`InferenceModel.generate_from_latents`), refinement by onnxruntime on
`latent_potential.onnx` (`InferenceModel.refine`, what the servers run) and by PyTorch
autograd (`TorchModel.refine`), each then decoded. Prints the median wall time of each over
`--repeats` runs and the ratios: refined / raw, and onnxruntime / PyTorch. Threads: one
onnxruntime thread per session and one torch thread unless `--threads` says otherwise.

    python benchmarks/refine_speed.py
    python benchmarks/refine_speed.py --models mnist --batches 1,64,1024 --steps 30 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, batch: int, steps: int, threads: int, repeats: int) -> dict:
    """Median seconds of raw, onnxruntime-refined and torch-refined generation of `batch`."""
    import numpy as np
    import torch

    import ebgen

    torch.set_num_threads(threads)
    model = ebgen.load_model(name, "cpu", threads=threads)
    torch_model = ebgen.load_torch(name)
    z = model.latents(batch, seed=0)

    def refined(refiner):
        return lambda: model.generate_from_latents(refiner.refine(z, steps, seed=0)[0])

    ort_x = refined(model)()  # warm both, and check they draw the same chain
    torch_x = refined(torch_model)()
    same = float(np.mean(np.abs(ort_x - torch_x).reshape(batch, -1).max(1) < 1e-3))
    return {"model": name, "batch": batch, "steps": steps,
            "raw": _median_seconds(lambda: model.generate_from_latents(z), repeats),
            "onnxruntime": _median_seconds(refined(model), repeats),
            "torch": _median_seconds(refined(torch_model), repeats),
            "same_samples": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,grid")
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| model | batch | steps | raw | refined, onnxruntime | refined, torch | refined / raw "
          "| onnxruntime / torch | same samples |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(name, batch, args.steps, args.threads, args.repeats)
            print(f"| {name} | {batch} | {r['steps']} | {1e3 * r['raw']:.1f} ms | "
                  f"{1e3 * r['onnxruntime']:.0f} ms | {1e3 * r['torch']:.0f} ms | "
                  f"{r['onnxruntime'] / r['raw']:.0f}× | {r['onnxruntime'] / r['torch']:.2f} | "
                  f"{100 * r['same_samples']:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
