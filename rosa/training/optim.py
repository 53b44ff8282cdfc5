"""The optimizer over the method's parameter groups (``train.optimizer.name``), and the learning-rate schedule.

- ``adamw`` (default): ``torch.optim.AdamW`` with ``betas``, ``eps``, ``weight_decay``.
- ``sgd``: ``torch.optim.SGD`` with ``momentum`` and ``weight_decay`` (``betas``/``eps`` unused). The
  ROSA paper's code trained with plain SGD: it built ``SGD(params, lr=lr)`` and passed its
  momentum and weight decay only when resuming, so the ROSA presets use momentum 0, weight decay 0.

The schedule is a plain function of the step (``lr_factor``) that the loop applies to every group's
base learning rate before each optimizer step. Keeping it stateless makes resume trivial and lets a
method rebuild the optimizer (new parameters after a ROSA resample) without touching the schedule.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(groups: list[dict], train_cfg) -> torch.optim.Optimizer:
    opt = train_cfg.optimizer
    groups = [dict(g, base_lr=g["lr"]) for g in groups if g["params"]]
    name = getattr(opt, "name", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=train_cfg.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay, foreach=True
        )
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=train_cfg.lr, momentum=getattr(opt, "momentum", 0.0), weight_decay=opt.weight_decay, foreach=True
        )
    raise ValueError(f"train.optimizer.name={name!r} is unknown; choose one of: {', '.join(OPTIMIZERS)}")


def rebuild_optimizer(old: torch.optim.Optimizer, groups: list[dict], train_cfg) -> torch.optim.Optimizer:
    """A new optimizer over ``groups`` with the same hyperparameters; parameters the old one knew
    keep their state (moments, momentum buffers), new parameters start with fresh ones."""
    new = build_optimizer(groups, train_cfg)
    for group in new.param_groups:
        for p in group["params"]:
            if p in old.state:
                new.state[p] = old.state[p]
    return new


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
