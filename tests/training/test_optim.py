"""The optimizer choice, train.optimizer.name: AdamW (default) or plain SGD (the ROSA paper's)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rosa.config import ConfigError, compose, validate
from rosa.training.optim import build_optimizer, rebuild_optimizer


def train_cfg(name: str, momentum: float = 0.0, weight_decay: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(
        lr=0.1,
        optimizer=SimpleNamespace(
            name=name, betas=[0.9, 0.999], eps=1e-8, weight_decay=weight_decay, momentum=momentum
        ),
    )


def one_group(*params) -> list[dict]:
    return [{"name": "all", "params": list(params), "lr": 0.1}]


def test_sgd_steps_by_lr_times_gradient():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = build_optimizer(one_group(p), train_cfg("sgd"))
    assert isinstance(optimizer, torch.optim.SGD)
    for expected in ([0.95, -2.1], [0.90, -2.2]):  # the same step twice: no momentum
        p.grad = torch.tensor([0.5, 1.0])
        optimizer.step()
        torch.testing.assert_close(p.detach(), torch.tensor(expected))


def test_sgd_momentum_survives_a_rebuild():
    kept, new = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    cfg = train_cfg("sgd", momentum=0.9)
    optimizer = build_optimizer(one_group(kept), cfg)
    kept.grad = torch.ones(2)
    optimizer.step()
    rebuilt = rebuild_optimizer(optimizer, one_group(kept, new), cfg)
    assert isinstance(rebuilt, torch.optim.SGD) and rebuilt.param_groups[0]["momentum"] == 0.9
    assert "momentum_buffer" in rebuilt.state[kept] and new not in rebuilt.state


def test_adamw_is_the_default():
    p = nn.Parameter(torch.zeros(2))
    no_name = SimpleNamespace(lr=0.1, optimizer=SimpleNamespace(betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0))
    assert isinstance(build_optimizer(one_group(p), no_name), torch.optim.AdamW)
    assert isinstance(build_optimizer(one_group(p), train_cfg("adamw")), torch.optim.AdamW)


def test_optimizer_keys_in_the_config():
    run = validate(compose(["train.optimizer.name=sgd", "train.optimizer.momentum=0.9"]))
    assert (run.train.optimizer.name, run.train.optimizer.momentum) == ("sgd", 0.9)
    assert validate(compose([])).train.optimizer.name == "adamw"
    with pytest.raises(ConfigError, match="adamw, sgd") as err:
        validate(compose(["train.optimizer.name=adam"]))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="momentum"):
        validate(compose(["train.optimizer.momentum=-1"]))
