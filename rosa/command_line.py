"""What ``train.py`` does: check the command line, then train its run or launch its sweep.

Every run is composed and validated once, here, before anything is loaded, submitted or created: a
single run, or every combination of a multirun (``-m``), then the launcher part (``hydra/launcher=...``,
``hydra.launcher.<key>=...``). A bad key, name or value stops with one line and exit status 2. The
runs then go to ``rosa.launch``: trained here one after another, or submitted as submitit jobs that
get their validated config (nothing is composed twice). Hydra's own flags (``--cfg``, ``--info``,
``--help``) go to Hydra.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from rosa.config import (
    CONF_DIR,
    ConfigError,
    RunConfig,
    compose,
    compose_sweep,
    expand_sweeps,
    rewrite_overrides,
    validate,
)
from rosa.launch import Launcher
from rosa.schema import did_you_mean


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass
class CommandLine:
    runs: list[tuple[RunConfig, str]]  # each validated run and the config.yaml it trains with
    launcher: Launcher | None  # a sweep's (-m); None for a single run
    argv: list[str]  # with ``<group>.name=X`` rewritten, for Hydra when ``hydra_flags``
    hydra_flags: bool


def check_command_line(argv: list[str]) -> CommandLine:
    """The command line's validated runs and launcher; one line on stderr and exit status 2 if bad."""
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
        check_no_sweeper(rewritten)
        job = [o for o in rewritten if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        if parsed.multirun:
            runs = compose_sweep(job)
        else:
            cfg = compose(job)
            runs = [(validate(cfg), OmegaConf.to_yaml(cfg, resolve=True))]
        launcher = sweep_launcher(rewritten) if parsed.multirun else None
    except ConfigError as err:
        fail(str(err))
    return CommandLine(runs, launcher, [program] + args, hydra_flags=len(args) != len(overrides) + parsed.multirun)


def sweep_launcher(overrides: list[str]) -> Launcher:
    """The launcher of a sweep: its preset's keys with the ``hydra.launcher.*`` overrides, resolved."""
    hydra_part = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if not any(o.partition("=")[0].lstrip("+~") == "hydra/launcher" for o in hydra_part):
        return Launcher("basic")
    first = expand_sweeps([o for o in overrides if o not in hydra_part], limit=1)[0]  # output.path: the sweep folder's
    cfg = _hydra_config(first + hydra_part)
    target = cfg.hydra.launcher.get("_target_", "")
    cluster = "slurm" if "Slurm" in target else "local" if "Local" in target else None
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    return Launcher(cfg.hydra.runtime.choices.get("hydra/launcher", ""), cluster, params, Path(cfg.hydra.sweep.dir))


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


def check_no_sweeper(overrides: list[str]) -> None:
    """One line for ``hydra/sweeper=...`` (or ``hydra.sweeper.<key>``): a sweep is composed, validated and
    launched here, every combination of it, never by a Hydra sweeper, which would otherwise be ignored."""
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key == "hydra/sweeper" or key.startswith("hydra.sweeper."):
            raise ConfigError(
                f"{override}: Hydra sweepers are not used (train.py -m composes, checks and trains every "
                "combination itself: rosa/launch.py); allowed: sweeps of comma lists, range(...) or choice(...)"
            )


def _launcher_keys(launcher: str) -> list[str]:
    return list(_hydra_config([f"hydra/launcher={launcher}"]).hydra.launcher)


def _hydra_config(overrides: list[str]):
    """The config with its ``hydra`` part (launcher, sweep folder), as Hydra would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
