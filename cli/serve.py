"""`ebgen serve`: wraps `ebgen.serve.http_service.run_http` (default) and
`ebgen.serve.torchserve.serve_torchserve` (--engine torchserve)."""
from __future__ import annotations

import click

from .options import device_option, model_arguments, pick_model


@click.command("serve")
@model_arguments()
@click.option("--engine", type=click.Choice(["http", "torchserve"]), default="http",
              show_default=True,
              help="http: the built-in service (Open Inference Protocol v2, no JVM); "
                   "torchserve: TorchServe with the generate/score archives (needs Java 17).")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="EBGEN_HOST",
              metavar="ADDR", help="Address to listen on; 0.0.0.0 exposes the service.")
@click.option("--port", type=int, default=8080, show_default=True, envvar="EBGEN_PORT",
              help="Inference port (TorchServe: management on PORT+1, metrics on PORT+2, "
                   "gRPC inference and management on PORT+3 and PORT+4).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes (http) or workers per model (torchserve).")
@click.option("--max-batch-samples", type=int, default=1024, show_default=True,
              help="http: most samples in one onnxruntime call; bigger requests run in chunks, "
                   "sharing batches evenly with the others.")
@click.option("--max-batch-ms", type=float, default=2.0, show_default=True,
              help="http: and no more samples than the running fit of batch time says take "
                   "this long (keeps a small request behind big ones quick).")
@click.option("--parallel-batches", type=int, default=None,
              help="http: batches run at once per worker, each on --threads onnxruntime "
                   "threads (default: the cores shared out among the workers); a batch running "
                   "by itself gets them all.")
@click.option("--max-batch-size", type=int, default=8, show_default=True,
              help="torchserve: most requests in one handler call (its batch_size).")
@click.option("--max-delay-ms", type=float, default=None,
              help="Longest wait for a batch to fill. http (default 2): waits only while the "
                   "arrival rate says waiting pays, never when idle; torchserve (default 5): "
                   "its max_batch_delay, waited whenever a batch is not full.")
@click.option("--threads", type=int, default=None,
              help="onnxruntime threads per batch (http, default 1) or per worker "
                   "(torchserve, default: the cores shared out among the workers); "
                   "$EBGEN_THREADS also sets TorchServe's.")
@click.option("--max-queue", type=int, default=64, show_default=True,
              help="Requests waiting per model before 503 (http: with Retry-After; "
                   "torchserve: its job_queue_size).")
@click.option("--max-samples", type=int, default=1024, show_default=True,
              help="Cap on num_samples per generate request.")
@click.option("--max-refine-steps", type=click.IntRange(0), default=100, show_default=True,
              help="Cap on refine_steps per generate request (latent-space MALA steps, each "
                   "both nets forward and backward; 0 turns refinement off).")
@click.option("--max-body-mb", type=float, default=8.0, show_default=True,
              help="Cap on a request body in MiB (413 beyond).")
@click.option("--max-connections", type=int, default=256, show_default=True,
              help="Open connections per worker before 503 (http engine).")
@click.option("--access-log", is_flag=True,
              help="http: log every request (off by default: it costs more than a small one).")
@click.option("--no-auth", is_flag=True,
              help="TorchServe only: turn token auth off (it is on by default).")
@click.option("--workdir", default=None, metavar="DIR",
              help="TorchServe only: config, keys (key_file.json) and logs. (default: a new "
                   "temporary folder)")
@device_option()
def serve_command(model, model_option, engine, host, port, workers, max_batch_samples,
                  max_batch_ms, parallel_batches, max_batch_size, max_delay_ms, threads,
                  max_queue, max_samples, max_refine_steps, max_body_mb, max_connections,
                  access_log, no_auth, workdir, device) -> None:
    """Serve generation and energy scoring over HTTP on 127.0.0.1.

    MODEL is a model directory (ebgen export), a checkpoint directory (exported to a cache
    first) or a bundled model name (see `ebgen models`); without one, the bundled `mnist`.

    \b
    Examples:
      ebgen serve mnist
      ebgen serve models/tiny
      ebgen serve models/tiny --workers 2 --port 9000
      ebgen serve models/tiny --engine torchserve --workdir /srv/ts
      curl -s 127.0.0.1:8080/generate -d '{"num_samples": 16, "seed": 0}' -o grid.png
      curl -s 127.0.0.1:8080/generate -d '{"num_samples": 16, "refine_steps": 30}' -o sharp.png
      curl -s 127.0.0.1:8080/score --data-binary @digit.png
    """
    import logging
    import sys

    from ebgen import resolve_model_path
    from ebgen.serve.validation import Limits

    if min(workers, max_batch_samples, max_batch_size, max_queue, max_samples, max_connections,
           threads or 1, parallel_batches or 1) < 1 or (max_delay_ms or 0) < 0 \
            or max_batch_ms <= 0:
        raise click.UsageError("--workers, --max-batch-samples, --max-batch-size, --threads, "
                               "--parallel-batches, --max-queue, --max-samples and "
                               "--max-connections must be at least 1; --max-delay-ms at least "
                               "0; --max-batch-ms above 0")
    limits = Limits(max_samples=max_samples, max_score_inputs=max(max_samples, 1024),
                    max_body_bytes=int(max_body_mb * 2**20), max_refine_steps=max_refine_steps)
    path = str(resolve_model_path(pick_model(model, model_option)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if engine == "torchserve":
        from ebgen.serve.torchserve import TorchServeConfig, serve_torchserve

        cfg = TorchServeConfig(path, host=host, port=port, management_port=port + 1,
                               metrics_port=port + 2, grpc_inference_port=port + 3,
                               grpc_management_port=port + 4, workers=workers,
                               max_batch_size=max_batch_size,
                               max_delay_ms=int(5 if max_delay_ms is None else max_delay_ms),
                               max_queue=max_queue, threads=threads, auth=not no_auth,
                               workdir=workdir, limits=limits)
        sys.exit(serve_torchserve(cfg, echo=click.echo))
    if no_auth or workdir:
        raise click.UsageError("--no-auth and --workdir apply to --engine torchserve only")
    from ebgen.serve.http_service import ServeConfig, run_http

    click.echo(f"ebgen HTTP service on http://{host}:{port}: POST /generate, POST /score, "
               f"/v2/models/{{generator,energy}}/infer, GET /metrics; Ctrl-C stops")
    run_http(ServeConfig(path, host=host, port=port, workers=workers, device=device,
                         max_batch_samples=max_batch_samples, max_batch_ms=max_batch_ms,
                         max_delay_ms=2.0 if max_delay_ms is None else max_delay_ms,
                         max_queue=max_queue, parallel_batches=parallel_batches,
                         threads=threads or 1,
                         max_connections=max_connections, access_log=access_log,
                         limits=limits))
