"""An exponential moving average of a network's weights (the generator's, `--generator-ema`).

Averaging the generator's weights over the last few thousand steps smooths out the step-to-step
wander of adversarial training; the average is what gets deployed (checkpoint, export, sample
grids) while training goes on with the raw weights, which the trainer state keeps for resume.
The decay warms up as min(decay, (1 + step) / (10 + step)), so an early average does not hold
on to the random initialisation. Buffers (batch norm's running statistics) are copied, not
averaged: they belong to the weights they were gathered with, and are refreshed every step.

    average = WeightAverage(generator, decay=0.999)
    ...; optimizer.step(); average.update(generator, step)
    deployed = average.module
"""
from __future__ import annotations

import copy

import torch


class WeightAverage:
    """`module`: a frozen copy of the network whose parameters follow the average."""

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(network).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: torch.nn.Module, step: int) -> None:
        """Move the average toward `network`'s weights after optimiser step `step` (0-based)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        mine = list(self.module.parameters())
        theirs = [p.detach().to(m.dtype) for m, p in zip(mine, network.parameters())]
        torch._foreach_lerp_(mine, theirs, 1.0 - decay)
        for m, b in zip(self.module.buffers(), network.buffers()):
            m.copy_(b)
