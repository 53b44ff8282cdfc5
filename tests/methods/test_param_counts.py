"""Trainable-parameter counts on Llama-2-7B's shapes (meta device: no weights, no download).

The RoSA paper's #Params column counts r * sum(n + m) + d * sum(n * m) over every 2-D matrix
including the token embeddings and the LM head (LoRA r=16: 41.1M, SpA d=0.6%: 40.4M); the code (theirs
and ours) adapts only the seven projections of each block, which is about 2.8% fewer for LoRA."""

from types import SimpleNamespace

import pytest
import torch

from rosa.methods.base import find_target_modules, linear_shape
from rosa.methods.lora import LoRA
from rosa.methods.rosa_robust import RosaRobust, density_for_budget, trainable_count


@pytest.fixture(scope="module")
def llama2_7b():
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(
            LlamaConfig(
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                vocab_size=32000,
            )
        )


def test_llama2_7b_counts(llama2_7b, capsys):
    every_matrix = [tuple(p.shape) for p in llama2_7b.parameters() if p.dim() == 2]
    targets = find_target_modules(llama2_7b, "all-linear")
    adapted = [linear_shape(llama2_7b.get_submodule(n)) for n in targets]
    assert len(every_matrix) == 32 * 7 + 2 and len(adapted) == 32 * 7 and "lm_head" not in targets

    paper_lora, paper_spa = trainable_count(every_matrix, 16, 0.0), trainable_count(every_matrix, 0, 0.006)
    ours_lora, ours_spa = trainable_count(adapted, 16, 0.0), trainable_count(adapted, 0, 0.006)
    assert round(paper_lora / 1e6, 1) == 41.1 and round(paper_spa / 1e6, 1) == 40.4  # the paper's table
    assert ours_lora == 16 * 2_498_560 == 39_976_960
    assert 0.027 < 1 - ours_lora / paper_lora < 0.029

    # the methods report exactly these counts (LoRA, and rosa-robust's LoRA part before its masks)
    with torch.device("meta"):
        lora = LoRA(SimpleNamespace(rank=16, alpha=16.0, dropout=0.0, rslora=False, target_modules="all-linear"))
        assert lora.trainable_parameters(lora.prepare(llama2_7b)) == ours_lora

    budgets = {f"r={r}": density_for_budget(adapted, 16, r) for r in (12, 8, 4, 0)}
    paper_budgets = {f"r={r}": density_for_budget(every_matrix, 16, r) for r in (12, 8, 4, 0)}
    with capsys.disabled():
        print("\nLlama-2-7B trainable parameters    paper's count (+embed, head)   7 projections (adapted)")
        print(
            f"  LoRA r=16                         {paper_lora / 1e6:8.2f}M                    {ours_lora / 1e6:8.2f}M"
        )
        print(f"  SpA d=0.6%                        {paper_spa / 1e6:8.2f}M                    {ours_spa / 1e6:8.2f}M")
        for key in budgets:
            print(
                f"  budget 16, {key:<5} -> density     {100 * paper_budgets[key]:8.4f}%                    "
                f"{100 * budgets[key]:8.4f}%"
            )
    # budget 16 reproduces the paper's densities for r = 12, 8, 4, 0 (0.15, 0.3, 0.45, 0.6%) to rounding
    for (key, d), paper in zip(budgets.items(), (0.0015, 0.003, 0.0045, 0.006)):
        assert d == pytest.approx(paper, rel=0.04), key


def test_rosa_robust_budget_on_meta(llama2_7b):
    """rosa-robust derives its density from the budget on the real shapes (before any mask)."""
    cfg = SimpleNamespace(
        name="rosa-robust",
        rank=8,
        alpha=16.0,
        dropout=0.0,
        rslora=False,
        density=None,
        budget=16.0,
        target_modules=["q_proj", "v_proj"],
        lora_lr=None,
        sparse_lr=None,
        mask_criterion="grad-fisher",
        mask_samples=None,
        mask_accumulator_device="cpu",
        warmup_steps=64,
        restart=True,
        mask_path=None,
        impl="torch",
    )
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=4096, intermediate_size=11008, num_hidden_layers=2, num_attention_heads=32, vocab_size=32000
            )
        )
        method = RosaRobust(cfg)
        model = method.prepare(model)
    assert method.phase == "warmup" and method.trainable_parameters(model) == 8 * 4 * 8192
    assert method.density == pytest.approx(8 * 8192 / 4096**2)
    assert trainable_count([(4096, 4096)] * 4, 8, method.density) == 16 * 4 * 8192
