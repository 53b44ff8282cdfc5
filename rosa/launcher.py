"""Checks for the launcher part of a command line (``hydra/launcher=slurm hydra.launcher.partition=gpu``).

``rosa.config.compose`` leaves ``hydra.*`` overrides out (they do not change a run); this composes
them with Hydra's own config, so a wrong launcher name or key stops with one line and exit status 2
before anything is submitted, like every other bad override.
"""
from __future__ import annotations

from pathlib import Path

from rosa.config import CONF_DIR, ConfigError, _did_you_mean

LAUNCHER_DIR = CONF_DIR / "hydra" / "launcher"


def launcher_choices() -> list[str]:
    ours = sorted(p.stem for p in LAUNCHER_DIR.glob("*.yaml"))
    return ours + ["basic", "submitit_slurm", "submitit_local"]


def check_launcher_overrides(overrides: list[str]) -> None:
    """Raise ConfigError (one line) for a bad ``hydra/launcher=`` choice or ``hydra.launcher.*`` key."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ours = [o for o in overrides if o.lstrip("+~").startswith(("hydra/launcher", "hydra.launcher."))]
    if not ours:
        return
    for o in ours:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and value not in launcher_choices():
            raise ConfigError(f"hydra/launcher={value!r} is unknown{_did_you_mean(value, launcher_choices())}; "
                              f"choose one of: {', '.join(launcher_choices())}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=[o.split(",")[0] if "=" in o else o for o in ours],
                                return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err).splitlines()[0]
        bad = next((o.partition("=")[0] for o in ours if f"'{o.partition('=')[0].lstrip('+~')}'" in text), None)
        if bad and bad.startswith("hydra.launcher."):
            raise ConfigError(_unknown_launcher_key(bad, ours)) from None
        raise ConfigError(f"launcher: {text}") from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


def _unknown_launcher_key(key: str, ours: list[str]) -> str:
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    base = [o for o in ours if o.startswith("hydra/launcher")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            known = sorted(hydra_compose(config_name="config", overrides=base, return_hydra_config=True).hydra.launcher)
    except Exception:  # noqa: BLE001 - only for the hint
        known = []
    finally:
        GlobalHydra.instance().clear()
    if not base:
        return (f"{key}: no launcher selected; add hydra/launcher=slurm (or local) before setting "
                f"hydra.launcher.* keys")
    leaf = key.rsplit(".", 1)[-1]
    return f"{key}: unknown key{_did_you_mean(leaf, known)}; allowed keys under hydra.launcher: {', '.join(known)}"


__all__ = ["check_launcher_overrides", "launcher_choices", "LAUNCHER_DIR", "Path"]
