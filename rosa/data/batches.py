"""The data order: a seeded permutation per epoch, sliced into optimizer steps of micro-batches.

The micro-batches of any step are a function of (seed, step) alone, so resuming a run needs only its
step counter, and every rank of a distributed job sees the same order (``rosa.distributed`` shares
the micro-batches out).
"""

from __future__ import annotations

import math

import torch

from rosa.data.features import collate_batch


class Batches:
    """Deterministic micro-batches: a seeded permutation per epoch, sliced by step."""

    def __init__(self, features: list[dict], micro_batch_size: int, accumulation: int, seed: int, pad_id: int):
        self.features, self.micro, self.accum, self.seed, self.pad_id = (
            features,
            micro_batch_size,
            accumulation,
            seed,
            pad_id,
        )
        self.micro_per_epoch = math.ceil(len(features) / micro_batch_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / accumulation)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return torch.randperm(len(self.features), generator=generator).tolist()

    def step(self, phase_step: int) -> list[dict[str, torch.Tensor]]:
        epoch, index = divmod(phase_step, self.steps_per_epoch)
        order = self.order(epoch)
        first = index * self.accum
        micro = range(first, min(first + self.accum, self.micro_per_epoch))
        return [
            collate_batch([self.features[i] for i in order[m * self.micro : (m + 1) * self.micro]], self.pad_id)
            for m in micro
        ]
