"""Triton model repositories: a model directory's ONNX files laid out for Triton Inference Server.

`write_triton_repository(model_dir, out)` writes, from the one set of names in `ebgen.names`:

    out/generator/config.pbtxt      z [z_dim] → x [sample_shape]   (onnxruntime backend)
    out/generator/1/model.onnx
    out/energy/config.pbtxt         x [sample_shape] → energy [1]  (onnxruntime backend)
    out/energy/1/model.onnx
    out/generator_energy/config.pbtxt   ensemble: z → x and energy (no file of its own)
    out/generator_energy/1/

The model names, input names and version ("1") are those of ebgen's own v2 service, so a
`tritonclient` call that sends `z` to "generator" or `x` to "energy" works against either
engine. Triton's convention for a batched output that has no dimension of its own is
`dims: [1]` with `reshape: { shape: [] }`: its clients get energies as [batch, 1] where ebgen
returns [batch] (the same values). `log_density` (−energy), the percentile and the calibrated
decisions are ebgen's own service's; Triton serves the networks.

    >>> options = TritonOptions(instance_kind="cpu", instance_count=2)
    >>> write_triton_repository("models/ring", "triton/ring", options)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ebgen.errors import EbgenError
from ebgen.files import atomic_directory
from ebgen.model_format import model_file, read_model_info
from ebgen.names import ENERGY_INPUT, ENERGY_OUTPUT, GENERATOR_INPUT, GENERATOR_OUTPUT

#: The models of a repository, by name: ebgen's v2 model names.
GENERATOR_MODEL, ENERGY_MODEL, ENSEMBLE_MODEL = "generator", "energy", "generator_energy"
#: What Triton calls the file of an onnxruntime model version.
TRITON_ONNX_FILE = "model.onnx"
CONFIG_NAME = "config.pbtxt"
VERSION = "1"
INSTANCE_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


class Enum(str):
    """A protobuf enum value: written bare in text format (`KIND_CPU`, not `"KIND_CPU"`)."""


@dataclass(frozen=True)
class TritonOptions:
    """How Triton runs each network: batching, instances, onnxruntime threads."""

    max_batch_size: int = 1024
    instance_kind: str = "auto"      # auto (GPU when present), cpu or gpu
    instance_count: int = 1
    threads: int = 0                 # onnxruntime intra-op threads per instance (0 = its choice)
    max_queue_delay_us: int = 0      # the dynamic batcher's wait; 0 batches only what queued

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise EbgenError(f"max_batch_size is {self.max_batch_size}: expected >= 1 (Triton's "
                             f"dynamic batcher needs a batched model)")
        if self.instance_kind not in INSTANCE_KINDS:
            raise EbgenError(f"unknown instance kind {self.instance_kind!r}; expected "
                             f"{', '.join(INSTANCE_KINDS)}")
        if self.instance_count < 1 or self.threads < 0 or self.max_queue_delay_us < 0:
            raise EbgenError(f"instances must be >= 1 and threads, delay >= 0 (got "
                             f"{self.instance_count}, {self.threads}, {self.max_queue_delay_us})")


def parse_instances(text: str) -> tuple[str, int]:
    """`auto`, `cpu`, `gpu`, or KIND:COUNT (`cpu:4`, `gpu:2`) → (kind, count)."""
    match = re.fullmatch(r"(auto|cpu|gpu)(?::([1-9][0-9]*))?", text.strip().lower())
    if match is None:
        raise EbgenError(f"instances {text!r}: expected auto, cpu, gpu or KIND:COUNT "
                         f"(e.g. cpu:4, gpu:2)")
    return match.group(1), int(match.group(2) or 1)


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a nested dict: strings quoted, `Enum`s bare, lists of
    messages as `[ {...}, ... ]`, lists of scalars as `[ 1, 2 ]`."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"{pad}  {{\n{to_pbtxt(item, indent + 2)}{pad}  }}"
                               for item in value)
            lines.append(f"{pad}{key} [\n{items}\n{pad}]")
        elif isinstance(value, list):
            items = ", ".join(_scalar(v) for v in value)
            lines.append(f"{pad}{key}: [ {items} ]" if items else f"{pad}{key}: [ ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _tensor(name: str, dims: list[int]) -> dict[str, Any]:
    """A batched FP32 tensor; one with no dimension besides the batch is Triton's [1]."""
    if dims:
        return {"name": name, "data_type": Enum("TYPE_FP32"), "dims": dims}
    return {"name": name, "data_type": Enum("TYPE_FP32"), "dims": [1],
            "reshape": {"shape": []}}


def network_config(name: str, inputs: list[dict], outputs: list[dict],
                   options: TritonOptions) -> dict[str, Any]:
    """The config of one ONNX network on the onnxruntime backend, dynamically batched."""
    config: dict[str, Any] = {
        "name": name, "backend": "onnxruntime", "max_batch_size": options.max_batch_size,
        "input": inputs, "output": outputs,
        "instance_group": [{"count": options.instance_count,
                            "kind": Enum(INSTANCE_KINDS[options.instance_kind])}],
        "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
        "default_model_filename": TRITON_ONNX_FILE}
    if options.threads:
        config["parameters"] = [
            {"key": "intra_op_thread_count", "value": {"string_value": str(options.threads)}},
            {"key": "inter_op_thread_count", "value": {"string_value": "1"}}]
    return config


def ensemble_config(z: dict, x: dict, energy: dict, max_batch_size: int) -> dict[str, Any]:
    """The ensemble that runs the generator, then the energy of its samples."""
    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {"model_name": model, "model_version": -1,
                "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
                "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}

    ensemble_energy = {k: v for k, v in energy.items() if k != "reshape"}  # clients' [1]
    return {"name": ENSEMBLE_MODEL, "platform": "ensemble", "max_batch_size": max_batch_size,
            "input": [z], "output": [x, ensemble_energy],
            "ensemble_scheduling": {"step": [
                step(GENERATOR_MODEL, {GENERATOR_INPUT: z["name"]},
                     {GENERATOR_OUTPUT: x["name"]}),
                step(ENERGY_MODEL, {ENERGY_INPUT: x["name"]},
                     {ENERGY_OUTPUT: energy["name"]})]}}


def repository_configs(info: dict[str, Any], options: TritonOptions) -> dict[str, dict]:
    """Each model's config dict, from model.json's shapes and the names in `ebgen.names`."""
    z = _tensor(GENERATOR_INPUT, [int(info["latent"]["z_dim"])])
    x_out = _tensor(GENERATOR_OUTPUT, [int(d) for d in info["sample_shape"]])
    x_in = _tensor(ENERGY_INPUT, [int(d) for d in info["sample_shape"]])
    energy = _tensor(ENERGY_OUTPUT, [])
    return {GENERATOR_MODEL: network_config(GENERATOR_MODEL, [z], [x_out], options),
            ENERGY_MODEL: network_config(ENERGY_MODEL, [x_in], [energy], options),
            ENSEMBLE_MODEL: ensemble_config(z, x_out, energy, options.max_batch_size)}


def check_against_onnx(path: Path, config: dict[str, Any]) -> None:
    """Raise `EbgenError` unless the ONNX file's inputs and outputs are the config's: names,
    a dynamic batch axis first, then the config's dims (a [1] that Triton reshapes to [])."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for role, declared, actual in (("input", config["input"], session.get_inputs()),
                                   ("output", config["output"], session.get_outputs())):
        names = [t["name"] for t in declared]
        if names != [a.name for a in actual]:
            raise EbgenError(f"{path}: {role}s {[a.name for a in actual]}, config says {names}")
        for tensor, arg in zip(declared, actual):
            dims = tensor.get("reshape", {}).get("shape", tensor["dims"])
            if isinstance(arg.shape[0], int) or list(arg.shape[1:]) != dims:
                raise EbgenError(f"{path}: {role} {arg.name} has shape {arg.shape}; config "
                                 f"says [batch, {', '.join(map(str, dims))}]")
            if arg.type != "tensor(float)":
                raise EbgenError(f"{path}: {role} {arg.name} is {arg.type}, config says FP32")


def write_triton_repository(model_dir: str | Path, out: str | Path,
                            options: TritonOptions | None = None, force: bool = False) -> Path:
    """Write the Triton model repository of the model directory `model_dir` into `out`.

    Each ONNX file is checked against its config (names, dims, types) before anything is
    kept; `out` is replaced whole (with `force`, only a repository this function wrote).
    """
    options = options or TritonOptions()
    model_dir, out = Path(model_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EbgenError(f"{out} exists and is not empty: pass --force to replace it")
        if not (out / GENERATOR_MODEL / CONFIG_NAME).is_file():
            raise EbgenError(f"{out} is not a Triton repository written by ebgen: refusing to "
                             f"replace it")
    info = read_model_info(model_dir)
    configs = repository_configs(info, options)
    sources = {GENERATOR_MODEL: model_file(model_dir, info["onnx"]["generator"]),
               ENERGY_MODEL: model_file(model_dir, info["onnx"]["energy"])}
    with atomic_directory(out, tag=str(os.getpid())) as tmp:
        for name, config in configs.items():
            version = tmp / name / VERSION
            version.mkdir(parents=True)
            if name in sources:
                shutil.copyfile(sources[name], version / TRITON_ONNX_FILE)
                check_against_onnx(version / TRITON_ONNX_FILE, config)
            (tmp / name / CONFIG_NAME).write_text(to_pbtxt(config))
    return out
