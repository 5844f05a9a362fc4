"""The one optimiser every curator training loop steps: SGD with Nesterov momentum, a linear warm-up
over the first 5% of steps and a cosine decay to 1% of the peak learning rate."""

from __future__ import annotations

import math
from typing import Iterable

import torch


def lr_at(step: int, total: int, peak: float) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``: warm-up, then cosine decay."""
    warm = max(1, int(0.05 * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


class ScheduledSGD:
    """SGD (Nesterov momentum, weight decay) whose learning rate follows :func:`lr_at` over
    ``total_steps`` steps; :meth:`step` takes one loss, backpropagates it and updates."""

    def __init__(self, params: Iterable[torch.nn.Parameter], total_steps: int, lr: float, momentum: float,
                 weight_decay: float):
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                                         weight_decay=weight_decay)
        self.total_steps, self.peak, self.steps = total_steps, lr, 0

    def step(self, loss: torch.Tensor) -> float:
        """One update from ``loss``; returns the learning rate it used."""
        lr = lr_at(self.steps, self.total_steps, self.peak)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return lr
