"""onnxruntime vs PyTorch eager: generation throughput on CPU, and the cost of `export_model`.

Measured side by side in one run on one model: by default an untrained model of the `mnist`
preset's architecture (z 100, 1024 experts, 28×28 grey; speed depends on the architecture, not
the weights), or the checkpoint given. Both paths do the same work per call: seeded latents
(`ebgen.latents.sample_latents`) → generator → float32 numpy images. Bounded to about a minute.

    python benchmarks/onnx_vs_torch.py
    python benchmarks/onnx_vs_torch.py --checkpoint runs/mnist --seconds 3
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def throughput(fn, batch: int, seconds: float) -> float:
    """Samples per second of `fn(batch, seed)`, after one warm-up call, over >= 3 calls."""
    fn(batch, 0)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        fn(batch, calls + 1)
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="Checkpoint directory (default: an untrained mnist-preset model).")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="Time per throughput measurement (default: 2).")
    parser.add_argument("--batches", default="1,256", help="Batch sizes (default: 1,256).")
    parser.add_argument("--threads", default="1,2",
                        help="Intra-op thread counts, the same for both engines (default: 1,2).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebgen-bench-") as work:
        run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> None:
    """Export into `work`, then measure both engines side by side and print the tables."""
    import onnxruntime as ort
    import torch

    from ebgen.checkpoint import load_checkpoint, save_checkpoint
    from ebgen.presets import preset_config
    from ebgen.export import HANDLER_FILES, export_model
    from ebgen.latents import sample_latents
    from ebgen.models import build_models
    from ebgen import load_model

    ckpt = Path(args.checkpoint) if args.checkpoint else work / "mnist"
    if args.checkpoint is None:
        config = preset_config("mnist", steps=0)
        energy, generator = build_models(config.model)
        save_checkpoint(ckpt, config, energy, generator, step=0)
    handler = None  # ebgen.serve's handlers, else a stand-in of the same cost
    if not all(path.is_file() for path in HANDLER_FILES.values()):
        handler = work / "stand_in_handler.py"
        handler.write_text("def handle(data, context):\n    return [None] * len(data or [])\n")

    start = time.perf_counter()
    model_dir = export_model(ckpt, work / "model", handler=handler, progress=False)
    export_s = time.perf_counter() - start

    config, _, generator, _ = load_checkpoint(ckpt, "cpu")
    m = config.model
    model = load_model(model_dir, device="cpu")

    @torch.no_grad()
    def torch_generate(n: int, seed: int):
        z = sample_latents(n, m.z_dim, seed, m.latent)
        return generator(torch.from_numpy(z)).numpy()

    def ort_generate(n: int, seed: int):
        return model.generate(n, seed)

    shape = "×".join(map(str, m.sample_shape))
    print(f"model: {config.preset} architecture, {ckpt if args.checkpoint else 'untrained'}; "
          f"z {m.z_dim}, {m.num_experts} experts, sample {shape}")
    print(f"generation on CPU: torch {torch.__version__} eager (eval, no_grad) vs onnxruntime "
          f"{ort.__version__} (ebgen.load_model), {args.seconds:g} s per cell\n")
    print(f"{'threads':>7}  {'batch':>5}  {'torch eager img/s':>18}  {'onnxruntime img/s':>18}  "
          f"{'ORT / torch':>11}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        model = load_model(model_dir, device="cpu", threads=threads)
        for batch in (int(b) for b in args.batches.split(",")):
            t = throughput(torch_generate, batch, args.seconds)
            o = throughput(ort_generate, batch, args.seconds)
            print(f"{threads:>7}  {batch:>5}  {t:>18.1f}  {o:>18.1f}  {o / t:>10.2f}x")

    print(f"\nexport_model (3 ONNX files + parity checks at batch 1/7/64 + 10000-sample "
          f"quantiles + 2 archives): {export_s:.1f} s")
    for path in sorted(model_dir.iterdir()):
        print(f"  {path.name:<22} {path.stat().st_size / 1e6:8.2f} MB")
    quantiles = model.info["energy_quantiles"]
    print(f"  (quantiles from {quantiles['num_samples']} {quantiles['source']})")


if __name__ == "__main__":
    main()
