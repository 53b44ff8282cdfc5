"""A grid's committed cells (rosa/results/committed.py): when a cell is current, and committing one."""

from __future__ import annotations

import json
from pathlib import Path

from rosa.results.committed import commit_cell, why_not_current

CODE = {"commit": "a" * 40, "dirty": [], "code": "f1"}


def finished_run(folder: Path, version: dict = CODE, split: str = "validation", resumed: bool = False) -> Path:
    """A run folder as training and its evaluation leave it (only the files a cell keeps, plus others)."""
    trained_with = [{**version, "from_step": 0}] + ([{**version, "code": "f0", "from_step": 4}] if resumed else [])
    (folder / "adapter").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "big.bin").write_bytes(b"0" * 1000)
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "status.json").write_text(json.dumps({"state": "done", "steps": 8, "trained_with": trained_with}))
    (folder / "adapter" / "adapter.json").write_text(json.dumps({"extra_state": {"density": 0.01}}))
    (folder / "adapter" / "adapter.safetensors").write_bytes(b"0" * 1000)
    (folder / f"metrics-{split}.json").write_text(
        json.dumps({"metrics": {"exact_match": 0.5}, "code": version, "trained_with": trained_with})
    )
    (folder / f"predictions-{split}.jsonl").write_text(
        "".join(
            json.dumps(
                {"id": f"x:{i}", "prompt": "long prompt", "generated": "g", "prediction": "p", "references": ["r"]}
            )
            + "\n"
            for i in range(3)
        )
    )
    return folder


def test_a_cell_is_current_only_when_this_code_trained_and_evaluated_it(tmp_path):
    cell = finished_run(tmp_path / "cell")
    assert why_not_current(cell, CODE, "validation") is None
    assert why_not_current(cell, {**CODE, "commit": "b" * 40}, "validation") is None  # a results commit later
    assert "f1; the checkout's is f2" in why_not_current(cell, {**CODE, "code": "f2"}, "validation")
    assert why_not_current(cell, {**CODE, "dirty": ["rosa/methods/lora.py"]}, "validation") is not None
    assert why_not_current(cell, CODE, "test").startswith("unreadable")  # not evaluated on test
    assert why_not_current(tmp_path / "nothing", CODE, "validation") == "not committed"
    assert why_not_current(finished_run(tmp_path / "resumed", resumed=True), CODE, "validation") is not None
    other_eval = finished_run(tmp_path / "other-eval")
    metrics = json.loads((other_eval / "metrics-validation.json").read_text())
    (other_eval / "metrics-validation.json").write_text(json.dumps({**metrics, "code": {**CODE, "code": "f9"}}))
    assert why_not_current(other_eval, CODE, "validation") is not None  # evaluated by other code
    (cell / "status.json").write_text(json.dumps({"state": "running", "trained_with": [{**CODE, "from_step": 0}]}))
    assert "running" in why_not_current(cell, CODE, "validation")


def test_committing_keeps_the_small_files_and_replaces_a_cell_whole(tmp_path):
    run = finished_run(tmp_path / "run")
    cell = tmp_path / "results" / "viggo" / "lora" / "name-abc"
    commit_cell(run, cell)
    assert sorted(p.relative_to(cell).as_posix() for p in cell.rglob("*") if p.is_file()) == [
        "adapter/adapter.json",
        "config.yaml",
        "machine.json",
        "metrics-validation.json",
        "predictions-validation.jsonl",
        "status.json",
    ]
    import torch

    assert json.loads((cell / "machine.json").read_text())["torch"] == torch.__version__
    rows = [json.loads(line) for line in (cell / "predictions-validation.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["x:0", "x:1", "x:2"] and all("prompt" not in r for r in rows)
    assert why_not_current(cell, CODE, "validation") is None

    (cell / "stale.txt").write_text("from an older commit of this cell")
    commit_cell(run, cell)
    assert not (cell / "stale.txt").exists()  # replaced, not merged
    assert sorted(p.name for p in cell.parent.iterdir()) == ["name-abc"]  # no staging folder left
