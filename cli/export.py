"""`ebgen export`: wraps `ebgen.export.export_model`."""
from __future__ import annotations

import json

import click

from .options import device_option, json_option


@click.command("export")
@click.argument("checkpoint", metavar="CKPT_DIR")
@click.option("--out", required=True, metavar="DIR",
              help="Model directory to write (model.json, ONNX files, TorchServe archives); "
                   "with --format triton, the Triton model repository.")
@click.option("--format", "out_format", type=click.Choice(["model-dir", "triton"]),
              default="model-dir", show_default=True,
              help="triton: a Triton model repository (generator, energy and the "
                   "generator_energy ensemble, each with its config.pbtxt) from CKPT_DIR, "
                   "a model directory or a bundled model name.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
              metavar="N", help="triton: the largest batch Triton's dynamic batcher forms.")
@click.option("--instances", default="auto", show_default=True, metavar="KIND[:COUNT]",
              help="triton: instance group of each network: auto (a GPU when present), cpu, "
                   "gpu, or with a count (cpu:4, gpu:2).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="triton: onnxruntime intra-op threads per instance "
                                "(0 = onnxruntime's choice, all cores).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=0,
              show_default=True, metavar="US",
              help="triton: how long the dynamic batcher waits to fill a batch (0: it "
                   "batches what queued while the last batch ran).")
@click.option("--force", is_flag=True,
              help="Replace an existing model directory at --out.")
@click.option("--no-archive", is_flag=True,
              help="Skip the TorchServe archives (generate.mar, score.mar).")
@click.option("--opset", type=int, default=18, show_default=True, metavar="N",
              help="ONNX opset (18 or newer).")
@click.option("--quantile-samples", type=int, default=10000, show_default=True, metavar="N",
              help="Training samples whose energies give the percentile table.")
@click.option("--log-z", is_flag=True,
              help="Estimate log Z by annealed importance sampling (forward and reverse, "
                   "from the energy's Gaussian base; 2-D models: by the midpoint rule on a "
                   "grid, AIS kept beside it) and store it in model.json: log_density "
                   "is then served normalised, in nats, and eval reports held-out likelihood.")
@click.option("--log-z-chains", type=click.IntRange(min=2), default=128, show_default=True,
              metavar="N", help="AIS chains (the standard error falls as 1/√N).")
@click.option("--log-z-temperatures", type=click.IntRange(min=10), default=5000,
              show_default=True, metavar="N",
              help="AIS temperatures each way (more: a tighter estimate, slower).")
@click.option("--name", default=None, metavar="NAME",
              help="Model name in model.json. (default: the checkpoint folder's name)")
@device_option(default="cpu")
@json_option()
def export_command(checkpoint, out, out_format, max_batch_size, instances, threads,
                   max_queue_delay_us, force, no_archive, opset, quantile_samples, log_z,
                   log_z_chains, log_z_temperatures, name, device, as_json) -> None:
    """Export a checkpoint to a self-contained model directory (ONNX + model.json).

    Writes generator.onnx (z → x in [-1, 1]), generator_uint8.onnx (z → uint8 pixels; images
    only), energy.onnx (x → energy), model.json and the TorchServe archives. Every ONNX file
    is checked against PyTorch at batch sizes 1, 7 and 64 before anything is kept. --device
    is where the energy quantiles are computed; export itself runs on the CPU.

    \b
    Examples:
      ebgen export runs/tiny --out models/tiny
      ebgen export runs/mnist --out models/mnist --force --no-archive
      ebgen export runs/ring --out models/ring --json
      ebgen export runs/mnist --out models/mnist --log-z --log-z-temperatures 20000
      ebgen export ring --format triton --out triton_repo --instances cpu:2 --threads 1
    """
    if out_format == "triton":
        if log_z:
            raise click.UsageError("--log-z writes a model directory: export one with it, "
                                   "then --format triton from that directory")
        _export_triton(checkpoint, out, force, as_json, max_batch_size=max_batch_size,
                       instances=instances, threads=threads,
                       max_queue_delay_us=max_queue_delay_us)
        return
    from ebgen.export import export_model
    from ebgen.model_format import read_model_info

    path = export_model(checkpoint, out, force=force, archive=not no_archive, opset=opset,
                        device=device, quantile_samples=quantile_samples, name=name,
                        progress=not as_json,
                        log_z={"chains": log_z_chains, "temperatures": log_z_temperatures}
                        if log_z else None)
    info = read_model_info(path)
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    summary = {"model_dir": str(path), "name": info["name"], "kind": info["kind"],
               "step": info["provenance"]["step"], "files": files,
               "parity": {k: max(v.values()) for k, v in info["parity"].items()},
               "quantile_source": info["energy_quantiles"]["source"],
               "archives": info["archives"]}
    if "log_partition" in info:
        summary["log_partition"] = info["log_partition"]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for file, size in files.items():
        click.echo(f"  {file:<22} {size / 1e6:8.2f} MB")
    click.echo(f"model directory {path} ({info['kind']}, step {summary['step']}); "
               f"percentiles from {summary['quantile_source']}")


def _export_triton(source, out, force, as_json, instances, **options) -> None:
    """`--format triton`: the Triton repository of a checkpoint, model directory or name."""
    import ebgen
    from ebgen.export.triton import TritonOptions, parse_instances, write_triton_repository

    kind, count = parse_instances(instances)
    options = TritonOptions(instance_kind=kind, instance_count=count, **options)
    repository = write_triton_repository(ebgen.resolve_model_path(source), out, options, force)
    models = sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))
    if as_json:
        click.echo(json.dumps({"repository": str(repository), "models": models}, indent=2))
        return
    click.echo(f"Triton model repository {repository}: {', '.join(models)}")
    click.echo(f"  serve it: tritonserver --model-repository {repository.resolve()}")
