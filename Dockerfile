# ebgen serving image: the built-in HTTP service (default; no JVM, no keys to expire) or
# TorchServe, over the bundled `mnist` model or any model directory ($EBGEN_MODEL: a bundled
# name or a path).
#
#   docker build -t ebgen .
#   docker run -p 8080:8080 ebgen                  # HTTP service, bundled mnist: POST /generate, /score, /v2/...
#   docker run -p 8080:8080 -e EBGEN_MODEL=ring ebgen   # another bundled model
#   ebgen export runs/mine --out model             # your own model directory, mounted:
#   docker run -p 8080:8080 -v $PWD/model:/models/mine:ro -e EBGEN_MODEL=/models/mine ebgen
#   docker run -p 8080:8080 -p 8082:8082 ebgen ebgen serve --engine torchserve --host 0.0.0.0 --port 8080 --workdir /srv/torchserve
#                                                  # TorchServe instead; token in /srv/torchserve/key_file.json
#
# GPU variant (CUDA base image, onnxruntime-gpu, torch's CUDA build), three build arguments away:
#   docker build -t ebgen:gpu --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg RUNTIME=gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --gpus all -p 8080:8080 ebgen:gpu   # onnxruntime's CUDA provider, CPU if none
#
# tests/test_dockerfile.py replays the install (RUN pip ...) and start steps (CMD, and the
# TorchServe command above) in a fresh venv, and resolves the GPU variant's install.
ARG BASE=python:3.11-slim
FROM ${BASE}

# cpu: onnxruntime; gpu: onnxruntime-gpu (one extra each, never both in one environment).
ARG RUNTIME=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EBGEN_MODEL=mnist \
    PATH=/opt/venv/bin:$PATH

# CUDA base images have no Python: install the distribution's where there is none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
       $(command -v python3 >/dev/null || echo python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/ebgen
COPY pyproject.toml README.md ./
COPY ebgen ./ebgen
COPY train ./train
COPY export ./export
COPY serve ./serve
COPY eval ./eval
COPY cli ./cli
# torch first, from $TORCH_INDEX: the CPU wheels by default (PyPI's CUDA build is several GB);
# for the GPU variant the index of the base image's CUDA.
RUN pip install --extra-index-url "$TORCH_INDEX" "torch==2.13.0"
RUN pip install ".[$RUNTIME,serve,torchserve]"

RUN useradd --create-home --uid 10001 ebgen \
    && mkdir -p /srv/torchserve && chown ebgen /srv/torchserve
USER ebgen
WORKDIR /srv/torchserve

# 8080 inference (both engines; the HTTP service's /metrics too), 8082 TorchServe's Prometheus
# metrics; TorchServe's management (8081) and gRPC (8083, 8084) stay on 127.0.0.1 inside.
EXPOSE 8080 8082
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys; from ebgen.serve.health import healthcheck; sys.exit(healthcheck('/srv/torchserve', 8080))"]

CMD ["ebgen", "serve", "--host", "0.0.0.0", "--port", "8080"]
