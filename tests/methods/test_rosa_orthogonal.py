"""rosa-orthogonal (ROSA, Hameed & Rabusseau 2023): exact splits, selection and split modes, the
paper's parameter counts, a teacher-student run where resampling beats LoRA's rank-r bound, and
end-to-end runs of train.py including a SIGKILL + resume across a resample."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rosa.methods.base import StepContext, adapted_layers
from rosa.methods.lora import LoRA
from rosa.methods.rosa_orthogonal import (
    OrthogonalLayer,
    RosaOrthogonal,
    gram_factors,
    resolve_rank,
    select_indices,
    split_factors,
    subspace_factors,
    subspace_generator,
    thin_svd,
)
from rosa.training.optim import build_optimizer, rebuild_optimizer
from tests.conftest import REPO, run_train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def rosa_cfg(**kw):
    return SimpleNamespace(
        **{
            "name": "rosa-orthogonal",
            "rank": 4,
            "selection": "random-window",
            "split": "sqrt",
            "resample_every": "epoch",
            "train_bias": True,
            "target_modules": "all-linear",
            **kw,
        }
    )


def train_cfg(lr=1e-2):
    return SimpleNamespace(lr=lr, optimizer=SimpleNamespace(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0))


def ctx(model, step, steps_per_epoch=10, total=100):
    return StepContext(
        model=model,
        step=step,
        phase_step=step,
        epoch=step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        micro_batches_per_step=1,
    )


def conv1d(nf, nx):
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(nf, nx)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def small_gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64)).eval()


# --------------------------------------------------------------------------- the pieces
def test_rank_ratio_to_int():
    assert resolve_rank(0.0125, 2304, 768) == 9  # GPT-2 S c_attn, min(n, m) = 768
    assert resolve_rank(0.1, 768, 3072) == 76
    assert resolve_rank(0.001, 100, 50) == 1  # max(int(0.05), 1)
    assert resolve_rank(7, 100, 50) == 7
    with pytest.raises(ValueError, match="min\\(out, in\\) = 50"):
        resolve_rank(51, 100, 50)


def test_selection_modes_pick_the_right_indices():
    k, r = 10, 3
    assert select_indices(k, r, "top").tolist() == [0, 1, 2]
    assert select_indices(k, r, "bottom").tolist() == [7, 8, 9]
    starts = set()
    for seed in range(200):
        idx = select_indices(k, r, "random-window", torch.Generator().manual_seed(seed)).tolist()
        assert idx == list(range(idx[0], idx[0] + r)) and 0 <= idx[0] <= k - r
        starts.add(idx[0])
    assert starts == set(range(k - r + 1))  # every window, the last one included
    subsets = set()
    for seed in range(50):
        idx = select_indices(k, r, "random-subset", torch.Generator().manual_seed(seed)).tolist()
        assert len(set(idx)) == r and idx == sorted(idx) and all(0 <= i < k for i in idx)
        subsets.add(tuple(idx))
    assert any(s != tuple(range(s[0], s[0] + r)) for s in subsets)  # not only windows
    # the choice is a function of (seed, step, layer index)
    draw = lambda *key: select_indices(100, 5, "random-subset", subspace_generator(*key)).tolist()
    assert draw(42, 7, 3) == draw(42, 7, 3)
    assert len({tuple(draw(42, 7, 3)), tuple(draw(42, 8, 3)), tuple(draw(42, 7, 4)), tuple(draw(43, 7, 3))}) == 4


def test_split_sqrt_vs_left():
    w = torch.randn(12, 8, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    idx = torch.tensor([1, 2, 5])
    a, b = split_factors(u[:, idx], s[idx], vh[idx, :], "sqrt")
    torch.testing.assert_close(a.T @ a, torch.diag(s[idx]))
    torch.testing.assert_close(b @ b.T, torch.diag(s[idx]))
    a2, b2 = split_factors(u[:, idx], s[idx], vh[idx, :], "left")
    torch.testing.assert_close(a2.T @ a2, torch.diag(s[idx] ** 2))
    torch.testing.assert_close(b2 @ b2.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(a @ b, a2 @ b2)


@pytest.mark.parametrize("split", ["sqrt", "left"])
@pytest.mark.parametrize("shape", [(60, 36), (36, 60)])
def test_gram_path_gives_the_svd_split(shape, split):
    """The Gram eigendecomposition gives the SVD's factors (up to the signs of the directions) and
    the same draw of indices; a draw that reaches tiny singular values falls back to the SVD."""
    g = torch.Generator().manual_seed(0)
    k = min(shape)
    u0, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g))
    v0, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g))
    s0 = torch.linspace(3.0, 0.5, k)  # well separated
    w = (u0 * s0) @ v0.T
    a, b, idx = gram_factors(w, 5, "random-window", torch.Generator().manual_seed(3), split)
    u, s, vh = thin_svd(w)
    idx_svd = select_indices(k, 5, "random-window", torch.Generator().manual_seed(3))
    assert idx.tolist() == idx_svd.tolist()
    a_ref, b_ref = split_factors(u[:, idx], s[idx], vh[idx, :], split)
    signs = torch.sign((a * a_ref).sum(0))
    torch.testing.assert_close(a * signs, a_ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(b * signs[:, None], b_ref, atol=2e-5, rtol=0)
    # tiny singular values in the drawn window: no Gram answer; subspace_factors then uses the SVD
    s_tiny = s0.clone()
    s_tiny[-5:] = 1e-4
    w_tiny = (u0 * s_tiny) @ v0.T
    assert gram_factors(w_tiny, 5, "bottom", None, split) is None
    a2, b2, idx2 = subspace_factors(w_tiny, 5, "bottom", split, torch.Generator().manual_seed(3))
    u2, s2, vh2 = thin_svd(w_tiny)
    assert idx2.tolist() == list(range(k - 5, k))
    torch.testing.assert_close(a2 @ b2, (u2[:, idx2] * s2[idx2]) @ vh2[idx2, :], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("selection", ["random-window", "random-subset", "top", "bottom"])
@pytest.mark.parametrize("n_out,n_in", [(40, 24), (24, 40)])
def test_sampling_is_exact_and_keeps_the_function(kind, selection, n_out, n_in):
    torch.manual_seed(0)
    base = nn.Linear(n_in, n_out) if kind == "linear" else conv1d(n_out, n_in)
    original = nn.Linear(n_in, n_out)
    with torch.no_grad():
        original.weight.copy_(base.weight if kind == "linear" else base.weight.T)
        original.bias.copy_(base.bias)
    w = original.weight.detach().clone()
    layer = OrthogonalLayer(base, rank=5, layer_index=0, train_bias=True)
    assert base.weight is None and layer.w_fixed.shape == (n_out, n_in)  # W held once
    x = torch.randn(3, 7, n_in)
    torch.testing.assert_close(layer(x), original(x))  # before sampling: A = B = 0
    layer.resample(selection, "sqrt", torch.Generator().manual_seed(1))
    torch.testing.assert_close(layer.w_fixed + layer.rosa_A @ layer.rosa_B, w, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(x), original(x), atol=1e-5, rtol=0)
    # W_fixed is the orthogonal complement: no component along the chosen left / right directions
    assert (layer.rosa_A.T @ layer.w_fixed).abs().max() < 1e-4
    assert (layer.w_fixed @ layer.rosa_B.T).abs().max() < 1e-4
    s = torch.linalg.svdvals(w)
    u, s2, vh = thin_svd(w)
    torch.testing.assert_close(u @ torch.diag(s2) @ vh, w, atol=1e-5, rtol=0)
    torch.testing.assert_close(s2, s)
    torch.testing.assert_close(
        torch.linalg.svdvals(layer.rosa_A @ layer.rosa_B)[:5], s[layer.rosa_indices], atol=1e-5, rtol=0
    )
    if selection == "top":
        assert layer.rosa_indices.tolist() == [0, 1, 2, 3, 4]
    if selection == "bottom":
        assert layer.rosa_indices.tolist() == [19, 20, 21, 22, 23]  # k = 24
    assert layer.rosa_A.requires_grad and layer.rosa_B.requires_grad and layer.base.bias.requires_grad
    assert (layer.rosa_A.shape, layer.rosa_B.shape) == ((n_out, 5), (5, n_in))


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_merged_base_is_a_plain_equal_layer(kind):
    torch.manual_seed(0)
    base = nn.Linear(16, 20) if kind == "linear" else conv1d(20, 16)
    layer = OrthogonalLayer(base, rank=3, layer_index=0, train_bias=True)
    layer.resample("random-window", "left", torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.rosa_A.add_(torch.randn_like(layer.rosa_A))
        layer.rosa_B.add_(torch.randn_like(layer.rosa_B))
        layer.base.bias.add_(1.0)
    x = torch.randn(4, 16)
    expected = layer(x).detach()
    merged = layer.merged_base()
    assert type(merged) is type(base) and isinstance(merged.weight, nn.Parameter)
    torch.testing.assert_close(merged(x), expected, atol=1e-5, rtol=1e-5)


def test_gpt2_state_roundtrip_merge_and_counts(tmp_path):
    """Bias training changes the count; a state saved after a resample restores the split exactly;
    the merged model equals the adapted one; the next resample draws the same subspace."""
    method = RosaOrthogonal(rosa_cfg(target_modules=["c_attn", "c_proj", "c_fc"]), seed=3)
    model = method.prepare(small_gpt2())
    layers = adapted_layers(model)
    assert len(layers) == 8 and all(isinstance(m, OrthogonalLayer) for m in layers.values())
    expected = sum(4 * (m.in_features + m.out_features) + m.out_features for m in layers.values())
    assert method.trainable_parameters(model) == expected
    no_bias = RosaOrthogonal(rosa_cfg(target_modules=["c_attn", "c_proj", "c_fc"], train_bias=False))
    assert no_bias.trainable_parameters(no_bias.prepare(small_gpt2())) == expected - sum(
        m.out_features for m in layers.values()
    )

    method.resample(model, step=5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    state = {n: t.clone() for n, t in method.state_dict(model).items()}
    assert any(n.endswith("w_fixed") for n in state) and any(n.endswith("rosa_indices") for n in state)
    assert any(n.endswith("base.bias") for n in state)
    ids = torch.randint(0, 50, (2, 9))
    logits = model(input_ids=ids).logits.detach()

    resumed = RosaOrthogonal(rosa_cfg(target_modules=["c_attn", "c_proj", "c_fc"]), seed=3)
    other = resumed.prepare(small_gpt2())
    resumed.load_state_dict(other, state)
    resumed.load_extra_state(json.loads(json.dumps(method.extra_state())))
    torch.testing.assert_close(other(input_ids=ids).logits, logits)
    method.save_adapter(model, tmp_path)  # the eval path: prepare + load_adapter
    evaluated = RosaOrthogonal(rosa_cfg(target_modules=["c_attn", "c_proj", "c_fc"]), seed=3)
    third = evaluated.prepare(small_gpt2())
    evaluated.load_adapter(third, tmp_path)
    torch.testing.assert_close(third(input_ids=ids).logits, logits)
    assert evaluated.last_sampled_step == 5
    method.resample(model, step=10)
    resumed.resample(other, step=10)
    for (n, a), b in zip(method.state_dict(model).items(), resumed.state_dict(other).values()):
        assert torch.equal(a, b), n
    logits = model(input_ids=ids).logits.detach()
    merged = method.merge(model)
    assert not adapted_layers(merged)
    torch.testing.assert_close(merged(input_ids=ids).logits, logits, atol=1e-5, rtol=1e-5)


def test_before_step_schedule_new_parameters_and_optimizer_rebuild():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
    method = RosaOrthogonal(rosa_cfg(rank=2, resample_every=4))
    model = method.prepare(model)
    tc = train_cfg()
    optimizer = build_optimizer(method.param_groups(model, tc), tc)
    due = []
    for step in range(10):
        old = {id(p) for p in model.parameters() if p.requires_grad}
        req = method.before_step(ctx(model, step))
        if req:
            assert req.rebuild_optimizer and not req.restart
            new = {id(p) for g in method.param_groups(model, tc) for p in g["params"]}
            assert len(old - new) == 4 and len(new - old) == 4  # A, B of both layers are new
            optimizer = rebuild_optimizer(optimizer, method.param_groups(model, tc), tc)
            due.append(step)
            assert method.before_step(ctx(model, step)) is None  # once per step
        model(torch.randn(5, 8)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert due == [0, 4, 8]
    bias = model[0].base.bias
    assert bias in optimizer.state and int(optimizer.state[bias]["step"]) == 10  # bias moments kept
    assert int(optimizer.state[model[0].rosa_A]["step"]) == 2  # fresh moments at step 8
    epoch = RosaOrthogonal(rosa_cfg(rank=2))
    model = epoch.prepare(nn.Sequential(nn.Linear(8, 8)))
    assert [s for s in range(25) if epoch.before_step(ctx(model, s, steps_per_epoch=7))] == [0, 7, 14, 21]
    once = RosaOrthogonal(rosa_cfg(rank=2, resample_every="never"))
    model = once.prepare(nn.Sequential(nn.Linear(8, 8)))
    assert [s for s in range(25) if once.before_step(ctx(model, s))] == [0]


# --------------------------------------------------------------------------- the paper's counts
PAPER = {  # model: (n_embd, n_layer, LoRA counts (M), ROSA counts with biases (M)), Table 2
    "gpt2": (768, 12, [1.3, 2.8, 5.6, 11.2], [1.4, 2.9, 5.7, 11.3]),
    "gpt2-medium": (1024, 24, [4.7, 9.8, 20.1, 40.1], [4.9, 10.1, 20.3, 40.3]),
    "gpt2-large": (1280, 36, [11.8, 23.6, 47.2, 94.4], [12.2, 24.0, 47.6, 94.8]),
}
RATIOS = [0.0125, 0.025, 0.05, 0.1]


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_trainable_parameter_counts_on_meta(name):
    from transformers import GPT2Config, GPT2LMHeadModel

    n_embd, n_layer, lora_counts, rosa_counts = PAPER[name]
    config = GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_embd // 64)
    targets = ["c_attn", "c_proj", "c_fc"]  # attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj by suffix
    for ratio, lora_m, rosa_m in zip(RATIOS, lora_counts, rosa_counts):
        with torch.device("meta"):  # shapes only: no weights, no SVD
            lora = LoRA(
                SimpleNamespace(rank=int(ratio * n_embd), alpha=1.0, dropout=0.0, rslora=False, target_modules=targets)
            )
            rosa = RosaOrthogonal(rosa_cfg(rank=ratio, target_modules=targets))
            lora_model = lora.prepare(GPT2LMHeadModel(config))
            rosa_model = rosa.prepare(GPT2LMHeadModel(config))
        assert len(adapted_layers(rosa_model)) == 4 * n_layer
        assert round(lora.trainable_parameters(lora_model) / 1e6, 1) == lora_m, (name, ratio)
        assert round(rosa.trainable_parameters(rosa_model) / 1e6, 1) == rosa_m, (name, ratio)
    if name == "gpt2":
        with torch.device("meta"):
            full = GPT2LMHeadModel(config)
        assert round(sum(p.numel() for p in full.parameters()) / 1e6, 1) == 124.4  # FT, Table 3


def test_paper_presets_compose_with_equal_settings():
    from dataclasses import asdict

    from transformers import GPT2Config, GPT2LMHeadModel

    from rosa.config import compose, validate

    runs = {
        kind: validate(compose([f"+experiment=rosa-paper/e2e-gpt2-{kind}"])) for kind in ("rosa-0.1", "lora-0.1", "fft")
    }
    assert len({json.dumps(asdict(r.train)) for r in runs.values()}) == 1  # same settings for all three
    train = runs["fft"].train
    assert (train.epochs, train.batch_size, train.lr, train.warmup_steps, train.scheduler) == (
        5,
        8,
        2e-4,
        500,
        "linear",
    )
    # the paper's code trained every method with plain SGD: SGD(params, lr=lr), no momentum, no weight decay
    assert (train.optimizer.name, train.optimizer.momentum, train.optimizer.weight_decay) == ("sgd", 0.0, 0.0)
    assert (train.max_grad_norm, train.loss_norm) == (None, "tokens")
    rosa, lora = runs["rosa-0.1"].fnmodel, runs["lora-0.1"].fnmodel
    assert (rosa.rank, rosa.resample_every, lora.rank) == (0.1, "epoch", 76)
    assert runs["rosa-0.1"].experiment == "rosa-paper/e2e-gpt2-rosa-0.1" and runs["fft"].model.name == "gpt2"
    with torch.device("meta"):
        method = RosaOrthogonal(rosa)
        model = method.prepare(GPT2LMHeadModel(GPT2Config()))
    assert round(method.trainable_parameters(model) / 1e6, 1) == 11.3


def test_every_paper_preset_trains_with_plain_sgd():
    from rosa.config import compose, validate

    names = sorted(
        p.stem
        for p in (REPO / "conf" / "experiment" / "rosa-paper").glob("*.yaml")
        if p.stem.startswith(("e2e-", "eli5-"))
    )
    assert len(names) == 54
    for name in names:  # ROSA, LoRA and FT alike: the official code ran SGD(params, lr=lr) for all
        optimizer = validate(compose([f"+experiment=rosa-paper/{name}"])).train.optimizer
        assert (optimizer.name, optimizer.momentum, optimizer.weight_decay) == ("sgd", 0.0, 0.0), name


# --------------------------------------------------------------------------- teacher-student
def test_resampling_beats_the_rank_r_bound_that_lora_stalls_at():
    d, r, steps = 32, 4, 500
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(d, d, generator=g) / math.sqrt(d)
    change = torch.randn(d, d, generator=g) / math.sqrt(d)  # full-rank target change
    target = w0 + change
    x = torch.linalg.qr(torch.randn(128, d, generator=g)).Q * math.sqrt(128)  # whitened: loss ~ ||W - W*||_F^2
    y = x @ target.T
    bound = float((torch.linalg.svdvals(change)[r:] ** 2).sum())  # best rank-r approximation error

    def fit(method):
        lin = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w0)
        model = method.prepare(nn.Sequential(lin))
        layer = adapted_layers(model)["0"]
        tc = train_cfg(1e-2)
        optimizer = build_optimizer(method.param_groups(model, tc), tc)
        moved, start = torch.zeros(d, d), None  # sum over subspaces of (A'B' - AB)
        end_delta = None
        for step in range(steps):
            if method.before_step(ctx(model, step, steps_per_epoch=steps, total=steps)):
                if start is not None:
                    moved += end_delta - start
                start = layer.delta_weight().detach().clone()
                optimizer = rebuild_optimizer(optimizer, method.param_groups(model, tc), tc)
            ((model(x) - y) ** 2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            end_delta = layer.delta_weight().detach().clone()
        if start is not None:
            moved += end_delta - start
        merged = layer.merged_weight() if isinstance(layer, OrthogonalLayer) else w0 + layer.delta_weight()
        return float(((merged.detach() - target) ** 2).sum()), merged.detach(), moved

    lora_err, _, _ = fit(
        LoRA(SimpleNamespace(rank=r, alpha=float(r), dropout=0.0, rslora=False, target_modules="all-linear"))
    )
    rosa_err, merged, moved = fit(RosaOrthogonal(rosa_cfg(rank=r, resample_every=40, train_bias=False)))
    assert bound * (1 - 1e-4) <= lora_err <= 1.02 * bound  # LoRA stalls at the bound
    assert rosa_err < 0.1 * bound  # resampling goes far below it
    torch.testing.assert_close(merged - w0, moved, atol=1e-5, rtol=0)  # W_T - W_0 = sum of subspace updates


# --------------------------------------------------------------------------- end to end (train.py)
FAST = [
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "train.eval_batches=1",
    "train.max_steps=8",
    "dataset.sample_rows.train=12",
    "dataset.sample_rows.validation=4",
    "dataset.sample_rows.test=4",
    "train.batch_size=4",
    "train.micro_batch_size=4",
    "fnmodel.rank=4",
]  # 12 rows / batch 4: 3 steps per epoch
ENV = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}  # tiny matrices: threads only contend
KILL_AFTER_SAVE = """
import os, runpy, signal, sys
import rosa.training.checkpoint as ckpt
save, at = ckpt.save_checkpoint, int(os.environ["KILL_AFTER_STEP"])
def save_then_die(run_dir, step, *args, **kwargs):
    path = save(run_dir, step, *args, **kwargs)
    if step == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
ckpt.save_checkpoint = save_then_die
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def final_state(root: Path) -> tuple[dict, str]:
    run_dirs = [p.parent for p in root.rglob("status.json")]
    assert len(run_dirs) == 1, run_dirs
    latest = json.loads((run_dirs[0] / "checkpoints" / "latest.json").read_text())
    state = json.loads((run_dirs[0] / "checkpoints" / latest["path"] / "state.json").read_text())
    return state, (run_dirs[0] / "train.log").read_text()


def test_train_py_resample_and_resume_across_a_resample(tmp_path):
    """Reference: `fnmodel=rosa-orthogonal fnmodel.resample_every=3`. Second run: the alias
    `fnmodel.name=rosa` with `resample_every=epoch` (= 3 steps here), SIGKILLed right after its step-4
    checkpoint (past the resample at step 3), then rerun: it resumes, resamples at step 6 and must
    reproduce the reference's per-step losses (same schedule, same seeded subspaces)."""
    reference = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "fnmodel=rosa-orthogonal",
            "fnmodel.resample_every=3",
            *FAST,
            f"output.path={tmp_path / 'ref'}",
        ],
        cwd=REPO,
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    alias = [
        "fnmodel.name=rosa",
        "fnmodel.resample_every=epoch",
        *FAST,
        "train.checkpoint_every=4",
        f"output.path={tmp_path / 'resumed'}",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SAVE, *alias],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, "KILL_AFTER_STEP": "4"},
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    killed_state, _ = final_state(tmp_path / "resumed")
    assert len(killed_state["history"]) == 4 and killed_state["method"]["last_sampled_step"] == 3
    # W_fixed is written once per sampling, beside the adapter tensors, not inside them
    (checkpoint,) = (tmp_path / "resumed").rglob("checkpoints/step-0000004")
    assert [f.name for f in checkpoint.glob("once-*")] == ["once-sample2-step3.safetensors"]
    from safetensors import safe_open

    with safe_open(str(checkpoint / "adapter.safetensors"), "pt") as f:
        assert f.keys() and not any(k.endswith(".w_fixed") for k in f.keys())
    resumed = run_train(*alias, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out_ref, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out_ref[-2000:]

    ref_state, ref_log = final_state(tmp_path / "ref")
    res_state, res_log = final_state(tmp_path / "resumed")
    assert [h["step"] for h in ref_state["history"]] == list(range(1, 9))
    assert [h["step"] for h in res_state["history"]] == list(range(1, 9))
    for a, b in zip(ref_state["history"], res_state["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (a, b)
    assert [f"at step {s} " in ref_log for s in (0, 3, 6)] == [True] * 3
    assert ref_state["method"]["samples"] == 3
    assert "rosa-orthogonal" in res_log and "resumed from" in res_log
    assert [f"at step {s} " in res_log for s in (0, 3, 6)] == [True] * 3  # one log across both processes
    assert res_state["method"]["samples"] == 3 and res_state["method"]["last_sampled_step"] == 6


def test_bf16_base_drift_is_bounded_by_the_float32_master():
    """Repeated resampling of a bf16 base: with W_fixed in float32 the merged weight stays within
    float32 rounding of the pretrained one (<= n 2^-23 max|W| after n resamples); a bf16 W_fixed
    (the old storage, kept for ``resample_every=never``) drifts far beyond that bound."""
    n = 30
    drift = {}
    for master in (True, False):
        torch.manual_seed(0)
        base = nn.Linear(48, 32, bias=True).to(torch.bfloat16)
        w0 = base.weight.detach().float().clone()
        layer = OrthogonalLayer(base, rank=4, layer_index=0, train_bias=False, fp32_master=master)
        for i in range(n):
            layer.resample("random-window", "sqrt", subspace_generator(0, i, 0))
        drift[master] = float((layer.merged_weight().detach() - w0).abs().max() / w0.abs().max())
        x = torch.randn(2, 48, dtype=torch.bfloat16)
        assert layer(x).dtype == torch.bfloat16
        assert layer.merged_base().weight.dtype == torch.bfloat16
    bound = n * 2.0**-23
    assert drift[True] <= bound
    assert drift[False] > 100 * bound


@pytest.mark.parametrize("train_bias", [True, False])
def test_fused_forward_matches_the_composition(train_bias):
    """The layer runs as lora's _LowRankLinear (scale 1, factors (B, A)): output and gradients of x,
    A, B and the trained bias equal W_fixed x + b + A (B x) under autograd."""
    torch.manual_seed(0)
    layer = OrthogonalLayer(nn.Linear(24, 40), rank=5, layer_index=0, train_bias=train_bias)
    layer.resample("random-window", "sqrt", torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer.rosa_A.add_(torch.randn_like(layer.rosa_A))
        layer.rosa_B.add_(torch.randn_like(layer.rosa_B))
    x = torch.randn(3, 7, 24, requires_grad=True)
    assert layer.fused_path(x)
    y = layer(x)
    grad = torch.randn(y.shape)
    y.backward(grad)
    ours = [y, x.grad, layer.rosa_A.grad, layer.rosa_B.grad] + ([layer.base.bias.grad] if train_bias else [])
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, layer.rosa_A, layer.rosa_B, layer.base.bias)]
    y_ref = torch.nn.functional.linear(leaves[0], layer.w_fixed, leaves[3]) + torch.nn.functional.linear(
        torch.nn.functional.linear(leaves[0], leaves[2]), leaves[1]
    )
    y_ref.backward(grad)
    refs = [y_ref] + [t.grad for t in leaves[:3]] + ([leaves[3].grad] if train_bias else [])
    for o, r in zip(ours, refs):
        torch.testing.assert_close(o, r.detach(), rtol=1e-5, atol=1e-5 * float(r.detach().abs().max()))
    assert train_bias or layer.base.bias.grad is None
