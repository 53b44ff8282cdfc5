"""Train one run (or a Hydra multirun sweep): ``python train.py fnmodel.name=rosa dataset.name=e2e``.

The command line is checked before anything is loaded: a wrong key, name or value prints one line
and exits with status 2. Re-running a finished command says so and exits 0; re-running an
unfinished one resumes it from its last checkpoint.
"""

import sys

import hydra
from omegaconf import DictConfig

from rosa.command_line import check_command_line, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    return run_task(cfg)


if __name__ == "__main__":
    sys.argv, single_run = check_command_line(sys.argv)
    if single_run is not None:  # composed and validated above: train it here, without Hydra's runner
        run_task(single=single_run)
    else:  # a sweep or a Hydra flag (--cfg, --info, ...): Hydra runs it
        main()
