"""Model FLOPs of one training step, counted from the model's shapes, and the core's matmul rate on
those shapes: the two halves of model FLOP utilisation (MFU = FLOPs / step time / rate).

What ``step_flops`` counts, for a batch of ``input_ids`` [B, L] (T = B * L tokens: every position
of the padded batch, padding included; a multiply-add is 2 FLOPs):

- every linear layer of the transformer blocks (nn.Linear / Conv1D, or the frozen base of one of our
  adapted layers), weight [out, in]: forward 2 T in out, input gradient 2 T in out, and the weight
  gradient 2 T in out only when the weight trains (fft). The input gradient is counted for every
  layer, also the first block's q/k/v/gate/up, whose input (the frozen embedding) needs none (<1 %).
  PEFT's LoRA is plain nn.Linear modules (lora_A, lora_B), so it falls under this rule;
- our adapters' own products: LoRA / RoSA's low-rank A (in -> r) and B (r -> out), rosa-orthogonal's
  B (in -> r) and A (r -> out), each as a trainable linear layer (forward, input and weight
  gradient: 6 T in r + 6 T r out); RoSA / SpA's sparse S with nnz entries as a sparse product:
  2 T nnz each for forward, input gradient and weight gradient (the sampled product), whatever the
  kernel (on CPU the forward runs as one dense x (W0 + S)^T, counted as the base layer plus 2 T nnz);
- attention: the scores Q K^T and the product with V, 2 B heads L L head_dim each in the forward
  (the full L x L square, not the causal half, as the kernels compute the masked square), twice that
  for the backward (two products each);
- the LM head at the labelled positions only (the harness's loss runs it there: rosa/models/loss.py),
  2 n vocab hidden forward + the same for the input gradient (+ the weight gradient when it trains).

Not counted: embeddings (a gather), norms, activations, rotary, softmax, the loss, the optimizer,
dropout: the elementwise work MFU leaves out by definition.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def _linear_like(module: nn.Module) -> bool:
    from rosa.methods.base import is_linear_like

    return is_linear_like(module)


def dense_layers(model: nn.Module) -> list[tuple[str, int, int, bool]]:
    """(name, in, out, trainable) of every dense product of the blocks, adapters' low-rank factors
    included; the head and the sparse parts are left to ``step_flops``."""
    from rosa.methods.base import AdaptedLayer, linear_shape

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inside_adapted, out = set(), []
    for name, m in model.named_modules():
        if isinstance(m, AdaptedLayer):
            inside_adapted.update(id(x) for x in m.modules() if x is not m)
            out.append((name, m.in_features, m.out_features, False))
            rank = getattr(m, "rank", 0)
            if rank and hasattr(m, "lora_A"):  # LoRA, RoSA's low-rank part, DoRA
                out += [(name + ".lora_A", m.in_features, rank, True), (name + ".lora_B", rank, m.out_features, True)]
            if rank and hasattr(m, "rosa_B"):  # rosa-orthogonal
                out += [(name + ".rosa_B", m.in_features, rank, True), (name + ".rosa_A", rank, m.out_features, True)]
        elif _linear_like(m) and m is not head and id(m) not in inside_adapted:
            n_out, n_in = linear_shape(m)
            out.append((name, n_in, n_out, m.weight.requires_grad))
    return out


def step_flops(model: nn.Module, batch: dict) -> dict[str, float]:
    """FLOPs of one forward + backward of ``model`` on ``batch`` (see the module docstring), by part:
    ``linear``, ``sparse``, ``attention``, ``head`` and ``total``."""
    b, length = batch["input_ids"].shape
    tokens = b * length
    linear = sum(2 * tokens * n_in * n_out * (3 if trains else 2) for _, n_in, n_out, trains in dense_layers(model))
    sparse = sum(3 * 2 * tokens * m.sparse_values.numel() for m in model.modules() if hasattr(m, "sparse_values"))
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attention = cfg.num_hidden_layers * 3 * (2 * 2 * b * heads * length * length * head_dim)
    head, labelled = model.get_output_embeddings(), int((batch["labels"][:, 1:] != -100).sum())
    vocab, hidden = head.weight.shape
    lm_head = 2 * labelled * vocab * hidden * (3 if head.weight.requires_grad else 2)
    parts = {"linear": linear, "sparse": sparse, "attention": attention, "head": lm_head}
    return {**parts, "total": sum(parts.values())}


def matmul_rate(model: nn.Module, batch: dict, repeats: int = 5) -> float:
    """The core's fp32 torch.mm rate (FLOP/s, torch's current thread count) on the model's own
    matmul shapes: for every distinct (in, out) of the blocks' base linear layers, with T = the
    batch's B * L tokens, the forward x [T, in] @ W^T, the input gradient g [T, out] @ W and the weight
    gradient g^T [out, T] @ x, in the layouts F.linear and its backward use. Each shape is weighted
    by how many layers have it; the median over ``repeats`` rounds (all shapes once per round)."""
    b, length = batch["input_ids"].shape
    tokens = b * length
    counts: dict[tuple[int, int], int] = {}
    for name, n_in, n_out, _ in dense_layers(model):
        if min(n_in, n_out) > 64:  # the base layers, not the rank-r factors
            counts[(n_in, n_out)] = counts.get((n_in, n_out), 0) + 1
    gen = torch.Generator().manual_seed(0)
    cases = []
    for (n_in, n_out), count in counts.items():
        x, g = torch.randn(tokens, n_in, generator=gen), torch.randn(tokens, n_out, generator=gen)
        w = torch.randn(n_out, n_in, generator=gen)
        for a, bmat in ((x, w.t()), (g, w), (g.t(), x)):
            cases.append((a, bmat, count, 2 * tokens * n_in * n_out))
    rates = []
    for a, bmat, _, _ in cases:  # warm-up
        torch.mm(a, bmat)
    for _ in range(repeats):
        flops = seconds = 0.0
        for a, bmat, count, f in cases:
            t0 = time.perf_counter()
            torch.mm(a, bmat)
            seconds += count * (time.perf_counter() - t0)
            flops += count * f
        rates.append(flops / seconds)
    return statistics.median(rates)
