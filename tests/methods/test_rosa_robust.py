"""rosa-robust / spa: the layer against its dense reference, the mask statistics, the schedule driven
through the method's hooks, the paper's premise on a teacher-student layer, and the real loop end to
end (phases, masks file, resume after a SIGKILL in each phase)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rosa.config import ConfigError, compose, validate
from rosa.kernels import CSRMatrix
from rosa.methods import StepContext, get_method
from rosa.methods.base import adapted_layers
from rosa.methods.lora import LoRA
from rosa.methods.rosa_robust import RobustLayer, RosaRobust, SpA, density_for_budget, trainable_count
from rosa.methods.rosa_robust.masks import GradientCollector, load_masks, masks_from_scores, top_k_mask
from rosa.training.optim import build_optimizer
from tests.conftest import join_as_client, rendezvous_port, run_train


def recovery(mask: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the true support ``truth`` that ``mask`` contains."""
    return float((mask & truth).sum()) / max(1, int(truth.sum()))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


DEFAULTS = dict(
    name="rosa-robust",
    rank=4,
    alpha=8.0,
    dropout=0.0,
    rslora=False,
    density=0.1,
    budget=None,
    target_modules="all-linear",
    lora_lr=1e-2,
    sparse_lr=1e-2,
    mask_criterion="grad-fisher",
    mask_samples=None,
    mask_accumulator_device="cpu",
    warmup_steps=3,
    restart=True,
    mask_path=None,
    impl="torch",
)


def cfg(**kw):
    return SimpleNamespace(**{**DEFAULTS, **kw})


def random_layer(base, rank=3, density=0.2, impl="torch", seed=0):
    gen = torch.Generator().manual_seed(seed)
    layer = RobustLayer(base, rank, alpha=6.0, dropout=0.0, rslora=False, generator=gen, impl=impl)
    n, m = layer.out_features, layer.in_features
    layer.set_sparse(CSRMatrix.from_mask(torch.rand(n, m, generator=gen) < density))
    with torch.no_grad():
        layer.sparse_values.normal_(generator=gen)
        if rank:
            layer.lora_B.normal_(generator=gen)
    return layer


def dense_reference(layer: RobustLayer) -> torch.Tensor:
    w = layer.base.weight.detach().clone()
    if layer.rank:
        w = w + layer.scale * layer.lora_B @ layer.lora_A
    return w + layer.csr.to_dense(layer.sparse_values)


# ----------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("impl", ["torch", "dense"])
@pytest.mark.parametrize("rank", [3, 0])
def test_layer_equals_dense_reference_and_merge(impl, rank):
    torch.manual_seed(0)
    base = nn.Linear(24, 20)
    layer = random_layer(base, rank=rank, impl=impl)
    x = torch.randn(2, 5, 24)
    expected = x @ dense_reference(layer).T + base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight() + base.weight, dense_reference(layer))
    merged = layer.merged_base()
    torch.testing.assert_close(merged(x), expected)


def test_conv1d_base():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    base = Conv1D(10, 12)
    for impl in ("torch", "dense"):
        layer = random_layer(base, impl=impl)
        x = torch.randn(3, 12)
        torch.testing.assert_close(
            layer(x),
            x @ (base.weight.T + layer.scale * layer.lora_B @ layer.lora_A + layer.csr.to_dense(layer.sparse_values)).T
            + base.bias,
        )


def test_impls_agree_and_sparse_grad_is_dense_grad_at_mask():
    torch.manual_seed(0)
    base = nn.Linear(32, 24).requires_grad_(False)
    x = torch.randn(7, 32)
    r = torch.randn(7, 24)
    grads = {}
    for impl in ("torch", "dense"):
        layer = random_layer(base, impl=impl)
        xi = x.clone().requires_grad_(True)
        (layer(xi) * r).sum().backward()
        grads[impl] = (layer(x).detach(), xi.grad, layer.sparse_values.grad, layer.lora_A.grad)
        # the dense weight gradient of the effective weight, sampled at the mask
        w = dense_reference(layer).detach().requires_grad_(True)
        ((x @ w.T + base.bias) * r).sum().backward()
        torch.testing.assert_close(layer.sparse_values.grad, w.grad[layer.csr.mask()])
        assert base.weight.grad is None
    for a, b in zip(grads["torch"], grads["dense"]):
        torch.testing.assert_close(a, b)


def test_empty_sparse_part_is_lora():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    layer = RobustLayer(base, 4, 8.0, 0.0, False, torch.Generator().manual_seed(1))
    from rosa.methods.lora import LoRALayer

    lora = LoRALayer(base, 4, 8.0, 0.0, False, torch.Generator().manual_seed(1))
    assert layer.nnz == 0 and torch.equal(layer.lora_A, lora.lora_A)
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), lora(x))


def test_registry_and_merge_on_tiny_model(tiny_tokenizer):
    from rosa.models.tiny import tiny_model

    run = validate(compose(["fnmodel=rosa-robust", "fnmodel.rank=4", "fnmodel.mask_criterion=random"]))
    method = get_method(run.fnmodel, seed=0)
    assert type(method) is RosaRobust and type(get_method(validate(compose(["fnmodel=spa"])).fnmodel)) is SpA
    model = method.prepare(tiny_model(tiny_tokenizer)).eval()  # eval: no LoRA dropout
    layers = adapted_layers(model)
    assert method.phase == "sparse" and len(layers) == 28
    with torch.no_grad():
        for layer in layers.values():
            layer.sparse_values.normal_(std=0.05)
            layer.lora_B.normal_(std=0.05)
    assert method.trainable_parameters(model) == sum(
        4 * (l.in_features + l.out_features) + int(0.006 * l.in_features * l.out_features) for l in layers.values()
    )
    ids = torch.randint(3, 259, (2, 17))
    unmerged = model(input_ids=ids).logits
    merged = method.merge(model)
    assert not adapted_layers(merged)
    torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- masks
def frozen_net(rank=0, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5))
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    for i in (0, 2):
        net[i] = RobustLayer(net[i], rank, 2.0, 0.0, False, gen)
    return net


@pytest.mark.parametrize("criterion", ["grad-fisher", "grad-mean"])
@pytest.mark.parametrize("rank", [0, 2])
def test_accumulator_equals_dense_statistic(criterion, rank):
    net = frozen_net(rank)
    layers = {"0": net[0], "2": net[2]}
    collector = GradientCollector(layers, criterion, samples=3).attach()
    batches = [torch.randn(4, 3, 8) for _ in range(4)]  # one step of 4, one more than the collector takes
    collector.begin_step()
    for x in batches:
        net(x).square().sum().backward()
    collector.end_step()
    collector.detach()
    assert collector.done and all(l.base.weight.grad is None for l in layers.values())
    # dense reference: per micro-batch weight gradient of a trainable copy (for nn.Linear it is G^T X)
    expected = {k: torch.zeros(l.out_features, l.in_features) for k, l in layers.items()}
    for x in batches[:3]:
        copy = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5))
        with torch.no_grad():
            for i in (0, 2):
                copy[i].weight.copy_(net[i].base.weight + net[i].delta_weight())
                copy[i].bias.copy_(net[i].base.bias)
        copy(x).square().sum().backward()
        for k in expected:
            g = copy[int(k)].weight.grad
            expected[k] += g.square() if criterion == "grad-fisher" else g
    scores = collector.scores()
    for k in expected:
        ref = expected[k] / 3
        torch.testing.assert_close(scores[k], ref if criterion == "grad-fisher" else ref.abs())


@pytest.mark.parametrize("criterion", ["grad-fisher", "grad-mean"])
def test_a_micro_batch_of_several_forward_calls_is_one_statistic(criterion):
    """The shared prompt prefix calls each layer twice per micro-batch (prefix, then suffixes): the
    statistic is formed from the summed G^T X of both calls, equal to one call on the whole batch."""
    net = frozen_net(2)
    layers = {"0": net[0], "2": net[2]}
    batches = [torch.randn(4, 3, 8) for _ in range(3)]
    scores = {}
    for split in (False, True):
        collector = GradientCollector(layers, criterion, samples=3).attach()
        collector.begin_step()
        for x in batches:
            outputs = [net(x[:1]), net(x[1:])] if split else [net(x)]
            sum(out.square().sum() for out in outputs).backward()
        collector.end_step()
        collector.detach()
        assert set(collector.counts.values()) == {3}
        scores[split] = collector.scores()
    for name, score in scores[False].items():
        torch.testing.assert_close(scores[True][name], score)


def test_collection_on_tiny_model_with_gradient_checkpointing(tiny_tokenizer):
    """Rank 0 (no trainable path): the hooks still see every layer once per micro-batch, and gradient
    checkpointing (the forward runs twice) changes nothing."""
    from rosa.models.tiny import tiny_model

    ids = torch.randint(3, 259, (2, 17))
    scores = {}
    for checkpointing in (False, True):
        model = tiny_model(tiny_tokenizer)
        if checkpointing:
            model.gradient_checkpointing_enable()
        method = SpA(cfg(name="spa", rank=0, density=0.01))
        model = method.prepare(model).train()
        collector = GradientCollector(method.layers(model), "grad-fisher", samples=1).attach()
        model(input_ids=ids, labels=ids).loss.backward()
        collector.end_step()
        assert set(collector.counts.values()) == {1}
        scores[checkpointing] = collector.scores()
    for name, score in scores[False].items():
        torch.testing.assert_close(scores[True][name], score)


def test_fisher_statistic_carries_the_example_weighting_of_the_loss(tiny_tokenizer):
    """train.loss_norm=examples at micro-batch 1 (the RoSA presets): the statistic is RoSA's, the mean
    over the step's examples of (G^T X)^2 for each example's HF loss over the step's examples."""
    from rosa.models.loss import example_mean_loss
    from rosa.models.tiny import tiny_model
    from tests.training.test_loss_norm import make_batch

    step = [make_batch([(3, 2)], 0), make_batch([(2, 9)], 1), make_batch([(4, 5)], 2)]

    def fisher(loss_of) -> dict[str, torch.Tensor]:
        method = RosaRobust(cfg(rank=2))
        model = method.prepare(tiny_model(tiny_tokenizer)).train()
        collector = GradientCollector(method.layers(model), "grad-fisher", samples=len(step)).attach()
        collector.begin_step()
        for batch in step:
            loss_of(model, batch).backward()
        collector.end_step()
        return collector.scores()

    ours = fisher(lambda model, batch: example_mean_loss(model, batch, n_examples=len(step)))
    rosa = fisher(lambda model, batch: model(**batch).loss / len(step))  # composer: HF loss / accumulation
    assert set(ours) == set(rosa) and len(ours) == 28
    for name, score in rosa.items():
        torch.testing.assert_close(ours[name], score)
    from rosa.models.loss import token_loss_sum  # train.loss_norm=tokens: 16 target tokens in the step

    tokens = fisher(lambda model, batch: token_loss_sum(model, batch)[0] / 16)
    assert not torch.allclose(tokens["model.layers.0.self_attn.q_proj"], rosa["model.layers.0.self_attn.q_proj"])


def test_top_k_count_and_mask_file(tmp_path):
    torch.manual_seed(0)
    scores = {"a": torch.rand(30, 50), "b": torch.rand(7, 3)}
    masks = masks_from_scores(scores, 0.013)
    assert [masks[k].nnz for k in scores] == [int(0.013 * 1500), int(0.013 * 21)] == [19, 0]
    top = top_k_mask(scores["a"], 19)
    assert torch.equal(masks["a"].mask(), top) and scores["a"][top].min() >= scores["a"][~top].max()
    from rosa.methods.rosa_robust.masks import save_masks

    save_masks(tmp_path / "m.safetensors", masks, {"step": 3})
    loaded, meta = load_masks(tmp_path / "m.safetensors")
    assert meta == {"step": 3} and all(torch.equal(loaded[k].mask(), masks[k].mask()) for k in masks)


# ----------------------------------------------------------------------------- schedule via the hooks
class Toy(nn.Module):
    """A teacher-student linear layer: the student starts at W0, the teacher is W0 + L + S."""

    def __init__(self, n=64):
        super().__init__()
        self.proj = nn.Linear(n, n, bias=False)

    def forward(self, x):
        return self.proj(x)


def teacher(n=64, rank=2, n_sparse=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(n, n, generator=gen) / n**0.5
    low = 0.25 * torch.randn(n, rank, generator=gen) @ (0.25 * torch.randn(rank, n, generator=gen))
    support = torch.zeros(n * n, dtype=torch.bool)
    support[torch.randperm(n * n, generator=gen)[:n_sparse]] = True
    support = support.view(n, n)
    signs = torch.randint(0, 2, (n, n), generator=gen) * 2 - 1
    sparse = support * signs * 1.0
    return w0, w0 + low + sparse, support


def drive(method, model, target, steps, micro=4, tokens=64, gen=None):
    """A minimal loop honouring the hook contract (before_step, micro-batches, after_step, requests)."""
    train_cfg = SimpleNamespace(lr=1e-2, optimizer=SimpleNamespace(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0))
    gen = gen or torch.Generator().manual_seed(0)
    opt = build_optimizer(method.param_groups(model, train_cfg), train_cfg)
    step = phase_step = 0
    events = []

    def handle(req):
        nonlocal opt, phase_step
        if req is None:
            return
        events.append((step, "restart" if req.restart else "rebuild"))
        opt = build_optimizer(method.param_groups(model, train_cfg), train_cfg)
        if req.restart:
            phase_step = 0

    def ctx():
        return StepContext(
            model=model,
            step=step,
            phase_step=phase_step,
            epoch=0,
            steps_per_epoch=steps,
            total_steps=steps,
            micro_batches_per_step=micro,
        )

    while phase_step < steps:
        handle(method.before_step(ctx()))
        for _ in range(micro):
            x = torch.randn(tokens, target.shape[1], generator=gen)
            loss = (model(x) - x @ target.T).square().mean() / micro
            loss.backward()
        for group in opt.param_groups:  # linear decay
            group["lr"] = group["base_lr"] * (1 - phase_step / steps)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        phase_step += 1
        handle(method.after_step(ctx()))
    return events


def toy_model(w0):
    model = Toy(w0.shape[0])
    with torch.no_grad():
        model.proj.weight.copy_(w0)
    return model


def test_schedule_warmup_collect_restart():
    w0, target, _ = teacher()
    model = toy_model(w0)
    method = RosaRobust(cfg(warmup_steps=3), seed=5)
    model = method.prepare(model)
    layer = model.proj
    a0 = layer.lora_A.detach().clone()
    assert method.phase == "warmup" and layer.nnz == 0
    assert method.trainable_parameters(model) == 4 * 128
    events = drive(method, model, target, steps=6)
    assert events == [(4, "restart")]  # 3 warm-up steps + 1 collection step
    assert method.phase == "sparse" and layer.nnz == int(0.1 * 64 * 64)
    assert method.trainable_parameters(model) == 4 * 128 + 409
    state = method.extra_state()
    assert state["masks"]["step"] == 4 and state["masks"]["micro_batches"] == 4
    # the restart re-created the initial LoRA: check by re-running the restart's re-init
    gen = torch.Generator().manual_seed(5)
    fresh = RobustLayer(nn.Linear(64, 64), 4, 8.0, 0.0, False, gen)
    assert torch.equal(fresh.lora_A, a0)


def test_schedule_variants(tmp_path):
    w0, target, _ = teacher()
    # restart=false: the optimizer is rebuilt, no restart
    method = RosaRobust(cfg(warmup_steps=2, restart=False), seed=0)
    model = method.prepare(toy_model(w0))
    assert drive(method, model, target, steps=4) == [(3, "rebuild")]
    # spa: no warm-up, the mask from the first step's gradients, then the restart
    spa = SpA(cfg(name="spa", rank=0, density=0.05, mask_samples=6), seed=0)
    model = spa.prepare(toy_model(w0))
    assert spa.phase == "collect" and spa.trainable_parameters(model) == 0
    assert drive(spa, model, target, steps=3, micro=4) == [(2, "restart")]  # 6 samples need 2 steps
    assert model.proj.nnz == int(0.05 * 4096) and spa.trainable_parameters(model) == 204
    # masks from a file: no warm-up, no restart, the same structure
    from rosa.methods.rosa_robust.masks import save_masks

    save_masks(tmp_path / "masks.safetensors", {"proj": model.proj.csr})
    reuse = RosaRobust(cfg(mask_path=str(tmp_path)), seed=0)
    model2 = reuse.prepare(toy_model(w0))
    assert reuse.phase == "sparse" and torch.equal(model2.proj.csr.mask(), model.proj.csr.mask())
    assert drive(reuse, model2, target, steps=2) == []
    # density 0 is LoRA; weight / random criteria need no warm-up
    lora = RosaRobust(cfg(density=0.0), seed=0)
    lora.prepare(toy_model(w0))
    assert lora.phase == "lora" and "LoRA only" in lora.describe()
    for criterion in ("weight", "random"):
        m = RosaRobust(cfg(mask_criterion=criterion), seed=0)
        mod = m.prepare(toy_model(w0))
        assert m.phase == "sparse" and mod.proj.nnz == 409
    top = top_k_mask(w0.abs(), 409)
    assert torch.equal(RosaRobust(cfg(mask_criterion="weight")).prepare(toy_model(w0)).proj.csr.mask(), top)


def test_state_from_any_phase_loads_into_a_fresh_model():
    w0, target, _ = teacher()
    method = RosaRobust(cfg(warmup_steps=1, restart=False), seed=0)
    model = method.prepare(toy_model(w0))
    drive(method, model, target, steps=4)
    state = {k: v.clone() for k, v in method.state_dict(model).items()}
    extra = json.loads(json.dumps(method.extra_state()))
    assert "proj.sparse_t_perm" in state and state["proj.sparse_values"].numel() == 409
    fresh = RosaRobust(cfg(warmup_steps=1, restart=False), seed=0)
    model2 = fresh.prepare(toy_model(w0))
    fresh.load_extra_state(extra)
    fresh.load_state_dict(model2, state)
    x = torch.randn(5, 64)
    torch.testing.assert_close(model2(x), model(x))
    assert fresh.phase == "sparse" and fresh.trainable_parameters(model2) == method.trainable_parameters(model)


def test_collection_state_is_checkpointed():
    """A checkpoint inside a multi-step collection holds the running sums: resuming gives the same mask."""
    w0, target, _ = teacher()

    def fresh():
        method = SpA(cfg(name="spa", rank=0, density=0.05, mask_samples=8), seed=0)
        return method, method.prepare(toy_model(w0))

    method, model = fresh()
    drive(method, model, target, steps=2)
    whole = model.proj.csr.mask()

    gen = torch.Generator().manual_seed(0)  # the same data stream, split by a "checkpoint"
    method, model = fresh()
    drive(method, model, target, steps=1, gen=gen)
    assert method.phase == "collect" and method.collector.collected == 4
    state, extra = method.state_dict(model), json.loads(json.dumps(method.extra_state()))
    assert "mask_accumulator.proj.sum" in state
    method, model = fresh()
    method.load_extra_state(extra)
    method.load_state_dict(model, state)
    drive(method, model, target, steps=1, gen=gen)
    assert method.phase == "sparse" and whole.sum() == 204
    assert torch.equal(model.proj.csr.mask(), whole)


def test_premise_low_rank_plus_sparse():
    """Teacher = W0 + rank-2 + 32 large sparse entries. At an equal budget (LoRA r=4 = 512 parameters),
    rosa-robust (r=2 + 256 nonzeros) ends closer to the teacher than LoRA and SpA (512 nonzeros), and
    its grad-fisher mask contains >= 90% of the sparse support."""
    w0, target, support = teacher()
    delta = (target - w0).norm()
    errors, masks = {}, {}
    shapes = [(64, 64)]
    for name, method in {
        "lora": LoRA(
            SimpleNamespace(rank=4, alpha=4.0, dropout=0.0, rslora=False, target_modules="all-linear"), seed=0
        ),
        "rosa": RosaRobust(cfg(rank=2, alpha=2.0, density=None, budget=4.0, warmup_steps=20), seed=0),
        "spa": SpA(cfg(name="spa", rank=0, density=None, budget=4.0), seed=0),
    }.items():
        model = method.prepare(toy_model(w0))
        assert method.trainable_parameters(model) in (0, 512, 256)
        drive(method, model, target, steps=300)
        assert method.trainable_parameters(model) == 512
        with torch.no_grad():
            errors[name] = float((model.proj.base.weight + model.proj.delta_weight() - target).norm() / delta)
        if name != "lora":
            masks[name] = model.proj.csr.mask()
    assert density_for_budget(shapes, 4.0, 2) == 256 / 4096 and trainable_count(shapes, 2, 256 / 4096) == 512
    print("relative errors", errors, "recovery", {k: recovery(m, support) for k, m in masks.items()})
    assert errors["rosa"] < 0.5 * errors["lora"] and errors["rosa"] < 0.5 * errors["spa"]
    assert recovery(masks["rosa"], support) >= 0.9


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["fnmodel=rosa-robust", "fnmodel.budget=16"], "fnmodel.density=0.006 conflicts with fnmodel.budget"),
        (["fnmodel=spa", "fnmodel.rank=4"], "fnmodel.rank=4 is not allowed for spa"),
        (["fnmodel=spa", "fnmodel.density=0"], "trains nothing"),
        (["fnmodel=rosa-robust", "fnmodel.mask_criterion=fisher"], "did you mean 'grad-fisher'"),
        (["fnmodel=rosa-robust", "fnmodel.impl=cuda"], "choose one of: auto, triton, torch, dense"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        validate(compose(overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["fnmodel=rosa-robust", "fnmodel.mask_path=/nonexistent"], "fnmodel.mask_path='/nonexistent' does not exist"),
        (["fnmodel=rosa-robust", "fnmodel.impl=triton", "device=cpu"], "fnmodel.impl='triton' is not usable"),
    ],
)
def test_errors_of_the_machine_that_trains(overrides, message, tmp_path):
    """The masks file and the kernels' device are checked before the run folder exists, on the
    machine that trains (as the run is built), not by validation (which may run on a login node)."""
    from rosa.training.loop import Trainer  # builds the run: every check runs before its folder exists

    run = validate(compose([*overrides, "model=tiny", "train.eval_at_end=false"]))  # validation reads no file
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        Trainer(run, tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "name,rank,density,lrs,precision",
    [
        ("gsm8k-bf16", 16, 0.018, (7e-4, 2e-4), "bf16"),
        ("viggo-bf16", 16, 0.006, (7e-4, 2e-4), "bf16"),
        ("sql-bf16", 4, 0.0045, (7e-4, 2e-4), "bf16"),
        ("gsm8k-4bit", 16, 0.006, (7e-4, 2e-4), "nf4"),
        ("viggo-4bit", 8, 0.009, (1e-3, 1e-4), "nf4"),
        ("sql-4bit", 64, 0.0, (7e-4, 2e-4), "nf4"),
    ],
)
def test_paper_presets(name, rank, density, lrs, precision):
    run = validate(compose([f"+experiment=rosa-paper/{name}"]))
    f, t = run.fnmodel, run.train
    assert (f.name, f.rank, f.density, (f.lora_lr, f.sparse_lr), run.precision.name) == (
        "rosa-robust",
        rank,
        density,
        lrs,
        precision,
    )
    assert (f.alpha, f.dropout, f.warmup_steps, f.mask_criterion, f.restart) == (16.0, 0.05, 64, "grad-fisher", True)
    assert (t.batch_size, t.micro_batch_size, t.epochs, t.scheduler, t.warmup_steps) == (32, 1, 1, "linear", 20)
    assert (run.dataset.name, run.dataset.max_length, run.seed, run.experiment) == (
        name.split("-")[0],
        512,
        42,
        f"rosa-paper/{name}",
    )
    assert run.model.name == "meta-llama/Llama-2-7b-hf"
    assert t.max_grad_norm is None  # the paper's composer configs clip nothing
    assert (t.loss_norm, t.optimizer.name) == ("examples", "adamw")  # composer + HF loss; AdamW
    # RoSA scored ViGGO on GEM/viggo validation and SQL on its own valid.jsonl (rosa-valid)
    assert run.eval.split == ("validation" if name.startswith("viggo") else "test")
    assert run.dataset.splits["test"] == ("rosa-valid" if name.startswith("sql") else "test")


def test_config_defaults_and_budget():
    run = validate(compose(["fnmodel=rosa-robust", "fnmodel.budget=32", "fnmodel.density=null"]))
    assert run.fnmodel.rank == 16 and run.fnmodel.budget == 32 and run.fnmodel.lora_lr == 7e-4
    assert validate(compose(["fnmodel=spa"])).fnmodel.rank == 0


# ----------------------------------------------------------------------------- data parallel
DP = [
    "fnmodel=rosa-robust",
    "fnmodel.rank=4",
    "fnmodel.dropout=0.0",
    "fnmodel.density=0.02",
    "fnmodel.warmup_steps=1",
    "fnmodel.mask_samples=3",
    "train.batch_size=8",
    "train.micro_batch_size=2",
    "train.max_steps=2",
    "device=cpu",
    "dataset.sample_rows.train=32",
    "dataset.sample_rows.validation=4",
    "train.eval_batches=1",
    "train.sample_at_eval=false",
    "train.checkpoint_every=100",
]


def _fit(run_dir: Path) -> dict:
    from rosa.tracking import Tracker
    from rosa.training.loop import Trainer

    trainer = Trainer(validate(compose(DP)), run_dir)
    trainer.fit(Tracker())
    masks = {n: l.csr.mask() for n, l in RosaRobust.layers(trainer.model).items()}
    return {
        "losses": [h["loss"] for h in trainer.history],
        "phase": trainer.method.phase,
        "masks": {n: m.nonzero().tolist() for n, m in masks.items()},
    }


def _dp_worker(rank: int, port: int, out: str) -> None:
    from rosa import distributed

    join_as_client(rank, 2, port)
    torch.set_num_threads(1)
    assert distributed.init_from_env(torch.device("cpu"))
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(_fit(Path(out) / "run")))
    finally:
        distributed.shutdown()


def test_two_ranks_choose_the_single_process_masks(tmp_path):
    """gloo, 2 processes, 4 micro-batches per step, mask_samples=3 (rank 0 counts micro-batches 0 and
    2, rank 1 counts 1 and skips 3): the summed statistics give the single process's masks, and the
    per-step losses (warm-up, collection, restart, sparse phase) match."""
    import torch.multiprocessing as mp

    single = _fit(tmp_path / "single")
    assert single["phase"] == "sparse" and len(single["losses"]) == 4
    with rendezvous_port() as port:
        mp.start_processes(_dp_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert multi["masks"] == single["masks"], rank
        assert multi["losses"] == pytest.approx(single["losses"], rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- the real loop
TINY = [
    "train.max_steps=5",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "dataset.sample_rows.train=16",
    "dataset.sample_rows.validation=4",
    "train.eval_at_end=false",
    "train.sample_at_eval=false",
    "train.eval_batches=1",
    "train.checkpoint_every=1",
    "device=cpu",
]


def run_dir(root: Path) -> Path:
    return next(p.parent for p in root.rglob("config.yaml"))


def final_state(root: Path) -> dict:
    from tests.training.faults import latest_checkpoint

    return json.loads((latest_checkpoint(run_dir(root)) / "state.json").read_text())


def train_until(args: list[str], stop_at_step: int | None) -> None:
    """train.py in a subprocess; with ``stop_at_step``, it SIGKILLs itself at the end of the next step,
    before that step's checkpoint, so the checkpoint of ``stop_at_step`` is its last (no timing involved)."""
    env = {"OMP_NUM_THREADS": "1"}
    if stop_at_step is not None:
        env["ROSA_TEST_SIGNAL_AT_STEP"] = f"{stop_at_step + 1}:SIGKILL"
    result = run_train(*args, env=env)
    if stop_at_step is None:
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.returncode == -signal.SIGKILL, (
            f"the run ended before step {stop_at_step + 1}: " + result.stderr[-3000:]
        )


def test_real_loop_phases_and_resume_in_each_phase(tmp_path, caplog):
    """warm-up 3 steps, collection over 4 steps (mask_samples=8 micro-batches of 2 per step), restart,
    8 steps: 15 steps in all. Uninterrupted vs killed (SIGKILL) once the checkpoint of step 1 (warm-up:
    steps 1-3), 4 (collection: 4-6) and 9 (after the mask: 7-14) exists, resumed each time: the same
    per-step losses and masks. The run kills itself at a given step (ROSA_TEST_SIGNAL_AT_STEP)."""
    import logging

    caplog.set_level(logging.INFO)
    common = [
        "fnmodel=rosa-robust",
        "fnmodel.rank=4",
        "fnmodel.density=0.02",
        "fnmodel.warmup_steps=3",
        "fnmodel.mask_samples=8",
        *TINY,
        "train.max_steps=8",
    ]
    from rosa.training.lifecycle import train

    ref_root = tmp_path / "ref"  # the uninterrupted reference, in this process (train.py's code path)
    assert train(validate(compose([*common, f"output.path={ref_root}"])), "") == 0
    ref_dir = run_dir(ref_root)
    log = (ref_dir / "train.log").read_text()
    assert "collecting grad-fisher gradients over 8 micro-batches from step 4" in log
    assert "restart at step 7" in log and (ref_dir / "masks.safetensors").exists()
    status = json.loads((ref_dir / "status.json").read_text())
    assert status["state"] == "done" and status["steps"] == 15
    losses = [h["loss"] for h in final_state(ref_root)["history"]]
    assert len(losses) == 15 and losses[7] == pytest.approx(losses[0], abs=1e-6)  # the restart re-creates step 1
    masks, meta = load_masks(ref_dir)
    assert meta["step"] == 7 and len(masks) == 28

    root = tmp_path / "killed"
    args = [*common, f"output.path={root}"]
    killed = []
    for stop in (1, 4, 9):
        train_until(args, stop)
        state = final_state(root)
        assert state["step"] == stop
        killed.append((state["step"], state["method"]["phase"]))
    train_until(args, None)
    assert [phase for _, phase in killed] == ["warmup", "collect", "sparse"], killed
    resumed = [h["loss"] for h in final_state(root)["history"]]
    assert resumed == pytest.approx(losses, rel=1e-5, abs=1e-6), (killed, resumed, losses)
    killed_masks, _ = load_masks(run_dir(root))
    assert all(torch.equal(killed_masks[k].mask(), masks[k].mask()) for k in masks)


def test_real_loop_spa(tmp_path, caplog):
    """spa through the loop's ``train`` (in this process: the same code path as train.py, minus Hydra)."""
    import logging

    from rosa.training.lifecycle import train

    caplog.set_level(logging.INFO)
    run = validate(
        compose(["fnmodel=spa", "fnmodel.density=0.02", *TINY, "train.max_steps=3", f"output.path={tmp_path}"])
    )
    assert train(run, "") == 0
    directory = run_dir(tmp_path)
    log = (directory / "train.log").read_text()
    assert "collecting grad-fisher gradients over 2 micro-batches from step 1" in log and "restart at step 1" in log
    state = final_state(tmp_path)
    assert state["method"]["phase"] == "sparse" and len(state["history"]) == 4
    from safetensors.torch import load_file

    adapter = load_file(str(directory / "adapter" / "adapter.safetensors"))
    values = [k for k in adapter if k.endswith("sparse_values")]
    assert len(values) == 28 and not any("lora_" in k for k in adapter)
    assert sum(adapter[k].numel() for k in values) == sum(masks.nnz for masks in load_masks(directory)[0].values())


@pytest.mark.parametrize("total_steps, expected", [(500, 64), (65, 64), (64, 15), (63, 15), (8, 1), (1, 0)])
def test_warmup_is_shortened_only_when_the_run_is_too_short_for_the_masks(total_steps, expected):
    """The paper's 64 warm-up steps, unless warm-up + one collection step would not fit the run:
    then a quarter of the run, so that short runs still build their masks."""
    method = RosaRobust(cfg(warmup_steps=64), seed=0)
    ctx = StepContext(
        model=nn.Linear(2, 2),
        step=0,
        phase_step=0,
        epoch=0,
        steps_per_epoch=total_steps,
        total_steps=total_steps,
        micro_batches_per_step=2,
    )
    assert method.warmup_length(ctx) == expected


# ----------------------------------------------------------------------------- faults
def test_non_finite_micro_batches_are_reported_and_counted(caplog):
    """A non-finite micro-batch statistic (an fp16 overflow) is left out with a warning, and the masks
    record the micro-batches really used, not the requested count."""
    import logging

    w0, target, _ = teacher()
    method = SpA(cfg(name="spa", rank=0, density=0.05), seed=0)
    model = method.prepare(toy_model(w0))

    def ctx(step):
        return StepContext(
            model=model, step=step, phase_step=step, epoch=0, steps_per_epoch=2, total_steps=2, micro_batches_per_step=4
        )

    method.before_step(ctx(0))
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        x = torch.randn(8, 64, generator=gen)
        if i == 1:
            x[0, 0] = float("inf")
        (model(x) - x @ target.T).square().mean().backward()
    caplog.set_level(logging.WARNING)
    method.after_step(ctx(1))
    assert method.phase == "sparse" and method.extra_state()["masks"]["micro_batches"] == 3
    assert "1 of the 4 micro-batch statistics were non-finite" in caplog.text
    assert "over 3 micro-batches" in method.describe()


def tiny_mask_file(directory: Path, tokenizer, density: float) -> tuple[Path, float]:
    """A masks file for the tiny model at ``density``, and its real density (nnz over entries)."""
    from rosa.methods.rosa_robust.masks import save_masks
    from rosa.models.tiny import tiny_model

    method = RosaRobust(cfg(rank=4, density=density, mask_criterion="random"), seed=0)
    layers = method.layers(method.prepare(tiny_model(tokenizer)))
    path = save_masks(directory / "masks.safetensors", {n: l.csr for n, l in layers.items()}, {"density": density})
    return path, sum(l.nnz for l in layers.values()) / sum(l.in_features * l.out_features for l in layers.values())


def test_mask_path_of_another_density_is_refused_or_taken_from_the_file(tmp_path, tiny_tokenizer):
    from rosa.models.tiny import tiny_model
    from rosa.training.loop import Trainer  # builds the run: every check runs before its folder exists

    path, real = tiny_mask_file(tmp_path, tiny_tokenizer, 0.02)
    with pytest.raises(ValueError) as err:  # the preset's density is 0.006
        Trainer(validate(compose(["fnmodel=rosa-robust", f"fnmodel.mask_path={path}"])), tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and f"has density {real:.4g}" in message and "fnmodel.density=null" in message
    Trainer(
        validate(compose(["fnmodel=rosa-robust", f"fnmodel.mask_path={path}", "fnmodel.density=0.02"])),
        tmp_path / "run",
    )
    run = validate(compose(["fnmodel=rosa-robust", f"fnmodel.mask_path={path}", "fnmodel.density=null"]))
    Trainer(run, tmp_path / "run")
    method = get_method(run.fnmodel, seed=0)
    method.prepare(tiny_model(tiny_tokenizer))
    assert method.density == pytest.approx(real) and method.extra_state()["density"] == method.density
    assert f"d={100 * real:.3g}%" in method.describe()
    result = run_train(
        "fnmodel=rosa-robust", f"fnmodel.mask_path={path}", f"output.path={tmp_path}/runs", env={"OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr[-2000:]
    assert f"has density {real:.4g}" in result.stderr and not (tmp_path / "runs").exists()


def test_unreadable_mask_path_is_one_line(tmp_path, tiny_tokenizer):
    path, _ = tiny_mask_file(tmp_path, tiny_tokenizer, 0.02)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    from rosa.training.loop import Trainer  # builds the run: every check runs before its folder exists

    with pytest.raises(ValueError) as err:
        Trainer(
            validate(compose(["fnmodel=rosa-robust", f"fnmodel.mask_path={path}", "fnmodel.density=0.02"])),
            tmp_path / "run",
        )
    assert "\n" not in str(err.value) and f"{path} is unreadable" in str(err.value)


def test_corrupt_masks_file_is_named_and_written_again_on_resume(tmp_path, monkeypatch, caplog):
    """A run killed after its mask phase whose masks.safetensors was truncated: the resume names the
    file and writes it again from the checkpoint's masks."""
    import logging

    from safetensors.torch import load_file

    from rosa.training.lifecycle import train
    from tests.training.faults import Killed, die_before_step

    args = ["fnmodel=spa", "fnmodel.density=0.02", *TINY, "train.max_steps=3", f"output.path={tmp_path}"]
    die_before_step(monkeypatch, 3)  # the mask at step 1, then the restart: step 2's checkpoint is in "sparse"
    with pytest.raises(Killed):
        train(validate(compose(args)), "")
    monkeypatch.undo()
    directory = run_dir(tmp_path)
    masks_file = directory / "masks.safetensors"
    masks_file.write_bytes(masks_file.read_bytes()[:100])
    caplog.set_level(logging.INFO)
    assert train(validate(compose(args)), "") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(masks_file) in w for w in warnings), warnings
    masks, _ = load_masks(directory)
    adapter = load_file(str(directory / "adapter" / "adapter.safetensors"))
    assert len(masks) == 28
    for name, csr in masks.items():
        assert torch.equal(csr.col_indices.long(), adapter[f"{name}.sparse_col_indices"].long())


def test_the_phases_are_one_state_machine():
    """Only the schedule's transitions are allowed (method.py's TRANSITIONS); the phase is stored by value."""
    from rosa.methods.rosa_robust import Phase

    method = RosaRobust(cfg(), seed=0)
    assert method.phase == Phase.WARMUP == "warmup"
    method._enter(Phase.COLLECT)
    method._enter(Phase.SPARSE)
    with pytest.raises(RuntimeError, match="no transition from phase sparse to collect"):
        method._enter(Phase.COLLECT)
    assert method.extra_state()["phase"] == "sparse"
    method.load_extra_state({**method.extra_state(), "phase": "warmup"})
    assert method.phase is Phase.WARMUP
