"""What ``train.py`` does around Hydra: check the command line first, then run one task.

``check_command_line`` rewrites ``<group>.name=X`` to ``<group>=X`` (resolving aliases), composes
every combination of a sweep and validates it, so a bad key, name or value stops with one line and
exit status 2 before Hydra launches anything (locally or on SLURM) and before any run folder exists.
"""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from rosa.config import ConfigError, compose, rewrite_overrides, validate, validate_sweep
from rosa.launcher import check_launcher_overrides

log = logging.getLogger("rosa")
_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
                     "--package", "-p", "--experimental-rerun", "--info", "-i"}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_command_line(argv: list[str]) -> list[str]:
    program, args = argv[0], argv[1:]
    overrides_at = [i for i, a in enumerate(args) if "=" in a and not a.startswith("-")
                    and not (i > 0 and args[i - 1] in _FLAGS_WITH_VALUE)]
    try:
        rewritten = rewrite_overrides([args[i] for i in overrides_at])
        for i, new in zip(overrides_at, rewritten):
            if new != args[i]:
                print(f"{args[i]} -> {new}", file=sys.stderr)
            args[i] = new
        if any(a in ("-m", "--multirun") for a in args):
            validate_sweep(rewritten)  # every combination
        else:
            validate(compose(rewritten))
        check_launcher_overrides(rewritten)  # hydra/launcher=slurm, hydra.launcher.<key>=...
    except ConfigError as err:
        fail(str(err))
    return [program] + args


def run_task(cfg: DictConfig) -> None:
    """The body of one Hydra job: validate, then train; exit status from the run when single."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rosa.training.loop import train

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "torchao", "torch._dynamo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        run = validate(cfg)
    except ConfigError as err:
        fail(str(err))
    status = train(run, OmegaConf.to_yaml(cfg, resolve=True))
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if status and not multirun:
        sys.exit(status)
