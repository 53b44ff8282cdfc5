"""Every preset of conf/experiment composes to the run config recorded before the presets were
rewritten as one base per paper plus small per-cell files (issue 24): the rewrite changed how they
are written, not what they train.

    python -m tests.conf.test_presets --record   # rewrite presets_composed.json (only for an intended change)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from rosa.config import compose, group_choices

RECORDED = Path(__file__).with_name("presets_composed.json")


def composed(name: str) -> dict:
    data = OmegaConf.to_container(compose([f"+experiment={name}"]), resolve=True)
    data.pop("hydra", None)
    return data


def presets() -> list[str]:
    return [
        name
        for name in group_choices("experiment")
        if not name.split("/")[-1].startswith("_") and "/base/" not in f"/{name}"
    ]


def test_every_preset_composes_as_recorded():
    recorded = json.loads(RECORDED.read_text())
    assert sorted(presets()) == sorted(recorded)  # none lost, none added unrecorded
    for name in presets():
        assert composed(name) == recorded[name], name


if __name__ == "__main__" and "--record" in sys.argv:
    RECORDED.write_text(json.dumps({name: composed(name) for name in presets()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORDED} ({len(presets())} presets)")
