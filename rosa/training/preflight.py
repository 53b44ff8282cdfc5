"""The checks of a run as ``train()`` builds it (``Trainer(run, run_dir)``), before its folder exists.

``rosa.config.validate`` checks the command line alone (it also runs on a SLURM login node). What
only the machine that trains can know is checked while the run is built, once, so that a bad value
still stops with one line and exit status 2 and leaves no run folder behind:

- the device exists (``device=cuda`` on a machine without CUDA: ``rosa.models.resolve_device``);
- an unfinished run in the same folder was started with the same training settings;
- the model source is readable (a folder, its ``config.json``, a GGUF file; GGUF converts) and,
  with ``model.chat_template=true``, its tokenizer has a template (``rosa.models``);
- the method fits the model and the device (``Method.check_fits``, from ``rosa.methods.build_model``):
  ``fnmodel.target_modules`` must match a linear layer, ranks must fit the layers' shapes,
  rosa-robust's ``fnmodel.mask_path`` must fit them and its ``fnmodel.impl`` the device;
- every split the run reads loads (files present, readable, decodable, with valid rows) and the
  training split keeps an example after tokenisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rosa.config import ConfigError, RunConfig, validate
from rosa.runs import flat_keys, run_identity

log = logging.getLogger("rosa")


class PreflightError(ValueError):
    """A value that does not fit this machine, model or data; ``str(err)`` is one line."""


def check_same_settings(run: RunConfig, run_dir: Path) -> None:
    """Refuse to resume an unfinished run whose stored config.yaml trains differently.

    The folder name holds a hash of the run identity, so this only fires when the stored settings
    were not hashed the way they are now (a folder from an older version, an edited config.yaml, a
    hash collision); resuming would then mix two trainings. An unreadable config.yaml is left to the
    resume code."""
    import yaml

    stored_path = Path(run_dir) / "config.yaml"
    if not stored_path.is_file():
        return
    try:
        stored = validate(yaml.safe_load(stored_path.read_text(encoding="utf-8")))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError, TypeError, AttributeError) as err:
        log.warning("%s: cannot compare with the stored settings (%s)", stored_path, err)
        return
    before, now = flat_keys(run_identity(stored)), flat_keys(run_identity(run))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k}={before.get(k)!r} there, {now.get(k)!r} now" for k in changed[:4])
        raise PreflightError(
            f"run folder {run_dir} holds an unfinished run with other training settings ({diff}"
            f"{', ...' if len(changed) > 4 else ''}); allowed: the same settings to resume it, "
            "or another output.name or output.path for a new run"
        )
