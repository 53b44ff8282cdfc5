"""Train one run (or a multirun sweep): ``python train.py fnmodel.name=rosa dataset.name=e2e``.

The command line is checked before anything is loaded: a wrong key, name or value prints one line
and exits with status 2. Re-running a finished command says so and exits 0; re-running an
unfinished one resumes it from its last checkpoint. ``-m`` sweeps train here one after another, or
go to SLURM (``hydra/launcher=slurm``) or local processes (``hydra/launcher=local``) through submitit.
"""

import sys

import hydra
from omegaconf import DictConfig

from rosa.command_line import check_command_line
from rosa.config import validated_run
from rosa.launch import launch


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_task(cfg: DictConfig) -> int:  # only with Hydra's own flags (--cfg, --info, ...)
    return launch([validated_run(cfg)])


if __name__ == "__main__":
    command_line = check_command_line(sys.argv)
    if command_line.hydra_flags:
        sys.argv = command_line.argv
        hydra_task()
    else:
        sys.exit(launch(command_line.runs, command_line.launcher))
