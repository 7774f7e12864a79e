"""latent_potential.onnx: refinement's potential and its gradient, for onnxruntime.

Latent-space MALA (`ebgen.refine`) needs U(u) = E(G(z(u))) + ‖u‖²/2 and ∇U at every move.
The servers and `ebgen.load_model` run no torch, so the export writes both into one ONNX file:
the gradient is traced once (`torch.func.grad_and_value` under `make_fx`, a symbolic batch)
into a graph of plain aten ops, which the dynamo exporter then translates like any module.

One op needs help: autograd of a convolution is `aten.convolution_backward`, which torch's
ONNX exporter cannot translate and does not decompose. Only its input gradient is ever
needed here (u is the one input; the weights are constants), and that is itself a
convolution: the input gradient of a strided convolution is the transposed convolution of
the output gradient with the same weight, and vice versa (`_convolution_input_grad`).

The file is checked as the others are: the full ONNX checker, its signature, and onnxruntime
against PyTorch's autograd on fresh batches of 1, 7 and 64 (`check_potential_parity`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebgen.errors import EbgenError, one_line
from ebgen.latents import sample_latents
from ebgen.names import POTENTIAL_GRAD_OUTPUT, POTENTIAL_INPUT, POTENTIAL_OUTPUT
from ebgen.potential import LatentPotential
from ebgen.refine import to_normal
from ebgen.sessions import ort_session

from .onnx_export import EXPORT_BATCH, PARITY_BATCHES, RTOL, export_onnx, quiet_exporter

aten = torch.ops.aten

#: |ORT − PyTorch| allowed on U and ∇U, relative to each batch's largest |value|: U sums an
#: image's energy (hundreds of nats) and the gradient runs back through both networks.
RELATIVE_TOLERANCE = RTOL


def _convolution_input_grad(grad_output, input, weight, bias_sizes, stride, padding, dilation,
                            transposed, output_padding, groups, output_mask):
    """`aten.convolution_backward` as a forward convolution, for the input gradient only."""
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("latent_potential.onnx needs no weight or bias gradient")
    dims = range(len(stride))
    if transposed:  # the input gradient of a transposed convolution is a convolution
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation,
                                      False, [0] * len(stride), groups)
    else:  # ... and that of a convolution a transposed one, padded back to the input's size
        extra = [input.shape[2 + i] - ((grad_output.shape[2 + i] - 1) * stride[i]
                                       - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1)
                                       + 1) for i in dims]
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation,
                                      True, extra, groups)
    return grad_input, None, None


def trace_potential(potential: LatentPotential, z_dim: int) -> nn.Module:
    """(U, ∇U) of `potential` as one traced `torch.fx.GraphModule` of forward ops (no autograd
    inside), exported as it is (a wrapper around it loses its constants in the exporter)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def value_and_grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad, _ = torch.func.grad_and_value(lambda v: potential(v).sum())(u)
        return potential(u), grad

    example = torch.zeros(EXPORT_BATCH, z_dim)
    graph = make_fx(value_and_grad, tracing_mode="symbolic", _allow_non_fake_inputs=True,
                    decomposition_table={aten.convolution_backward.default:
                                         _convolution_input_grad})(example)
    return graph


def export_latent_potential(potential: LatentPotential, z_dim: int, path: str | Path,
                            opset: int = 18) -> Path:
    """Write (U(u), ∇U(u)) of `potential` to `path` (input `u`, outputs `potential` and
    `potential_grad`, dynamic batch axis), checked as `export_onnx` checks every file. Raises
    `EbgenError` with the first line of what failed when tracing or export fails."""
    potential.eval()
    try:
        with quiet_exporter():
            module = trace_potential(potential, z_dim)
    except Exception as e:
        raise EbgenError(f"tracing the gradient for {Path(path).name} failed: "
                         f"{type(e).__name__}: {one_line(e)}") from e
    return export_onnx(module, torch.zeros(EXPORT_BATCH, z_dim), path, POTENTIAL_INPUT,
                       [POTENTIAL_OUTPUT, POTENTIAL_GRAD_OUTPUT], opset)


def check_potential_parity(path: str | Path, potential: LatentPotential, z_dim: int,
                           latent: str) -> dict[str, float]:
    """Max |ORT − PyTorch| over U and ∇U per batch size, on the normal variables behind fresh
    seeded latents. Raises `EbgenError` when either differs by more than RELATIVE_TOLERANCE
    of the batch's largest |value| (and the shapes must match)."""
    path = Path(path)
    session = ort_session(path)
    diffs: dict[str, float] = {}
    for seed, n in enumerate(PARITY_BATCHES):
        u = to_normal(sample_latents(n, z_dim, 1000 + seed, latent), latent).astype(np.float32)
        got = session.run([POTENTIAL_OUTPUT, POTENTIAL_GRAD_OUTPUT], {POTENTIAL_INPUT: u})
        want = potential.value_and_grad(u)
        worst = 0.0
        for name, g, w in zip(("U", "∇U"), got, want):
            if g.shape != w.shape:
                raise EbgenError(f"{path.name} at batch {n}: onnxruntime gives {name} of "
                                 f"shape {g.shape}, PyTorch {w.shape}")
            diff = float(np.abs(g - w).max(initial=0.0))
            limit = RELATIVE_TOLERANCE * max(float(np.abs(w).max(initial=0.0)), 1.0)
            if not diff <= limit:
                raise EbgenError(f"{path.name} does not match PyTorch at batch {n}: max "
                                 f"|diff| of {name} {diff:.3g} (tolerance {limit:.3g})")
            worst = max(worst, diff)
        diffs[str(n)] = worst
    return diffs
