"""What ``train.py`` does: check the command line, then train one run or hand a sweep to Hydra.

A single run is composed and validated once, here, and trained in this process. A multirun (``-m``)
is validated combination by combination before Hydra launches anything (basic, local or SLURM
launcher), so a bad key, name or value stops with one line and exit status 2 before any job or run
folder exists; each job then validates its own combination (in this process: the check is reused).
"""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from rosa.config import CONF_DIR, ConfigError, RunConfig, compose, rewrite_overrides, validate, validate_sweep
from rosa.schema import did_you_mean

log = logging.getLogger("rosa")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_command_line(argv: list[str]) -> tuple[list[str], tuple[RunConfig, str] | None]:
    """The command line with ``<group>.name=X`` rewritten, and for a single plain run (no ``-m``, no
    Hydra flag) the validated run and its config YAML: the caller then trains it without Hydra's runner."""
    from hydra._internal.utils import get_args_parser

    program, args = argv[0], list(argv[1:])
    parsed = get_args_parser().parse_intermixed_args(args)  # Hydra's own flags; the rest are overrides
    overrides = list(parsed.overrides or [])
    try:
        rewritten = rewrite_overrides(overrides)
        at = iter(i for i, a in enumerate(args) if a in overrides)
        for old, new in zip(overrides, rewritten):
            i = next(at)
            if new != old:
                print(f"{old} -> {new}", file=sys.stderr)
            args[i] = new
        check_launcher_overrides(rewritten)  # hydra/launcher=slurm, hydra.launcher.<key>=...
        if parsed.multirun:
            validate_sweep(rewritten)  # every combination
            return [program] + args, None
        cfg = compose(rewritten)
        run = validate(cfg)
    except ConfigError as err:
        fail(str(err))
    hydra_flags = len(args) != len(overrides)
    return [program] + args, (None if hydra_flags else (run, OmegaConf.to_yaml(cfg, resolve=True)))


def check_launcher_overrides(overrides: list[str]) -> None:
    """One line for a bad ``hydra/launcher=`` choice or ``hydra.launcher.<key>``, before any submission."""
    ours = [o for o in overrides if o.lstrip("+~").startswith(("hydra/launcher", "hydra.launcher."))]
    choices = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")) + [
        "basic",
        "submitit_slurm",
        "submitit_local",
    ]
    chosen = [o.partition("=")[2] for o in ours if o.partition("=")[0].lstrip("+~") == "hydra/launcher"]
    for value in chosen:
        if value not in choices:
            raise ConfigError(
                f"hydra/launcher={value!r} is unknown{did_you_mean(value, choices)}; "
                f"choose one of: {', '.join(choices)}"
            )
    keys = [o.partition("=")[0] for o in ours if o.lstrip("+~").startswith("hydra.launcher.")]
    if not keys:
        return
    if not chosen:
        raise ConfigError(
            f"{keys[0]}: no launcher selected; add hydra/launcher=slurm (or local) before setting hydra.launcher.* keys"
        )
    known = sorted(_launcher_keys(chosen[-1]))
    for key in keys:
        leaf = key.lstrip("+~").removeprefix("hydra.launcher.").split(".")[0]
        if leaf not in known and not key.startswith("+"):
            raise ConfigError(
                f"{key}: unknown key{did_you_mean(leaf, known)}; allowed keys under hydra.launcher: {', '.join(known)}"
            )


def _launcher_keys(launcher: str) -> list[str]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True
            )
        return list(cfg.hydra.launcher)
    finally:
        GlobalHydra.instance().clear()


def run_task(cfg: DictConfig | None = None, single: tuple[RunConfig, str] | None = None) -> int:
    """The body of one job: train (or resume, or skip) the run. A single run exits with its status; a
    multirun job returns it (submitit's job result holds it as the Hydra job's return value)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rosa.training.lifecycle import train

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "torchao", "torch._dynamo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if single is None:
        try:
            single = validate(cfg), OmegaConf.to_yaml(cfg, resolve=True)
        except ConfigError as err:
            fail(str(err))
    status = train(*single)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if status and not multirun:
        sys.exit(status)
    return status
