"""rosa.results.before_after (make train's last step): the base run and the trained run side by side."""

from __future__ import annotations

import json

import pytest

from rosa import atomic
from rosa.results.before_after import before_after, main
from rosa.runs import update_status
from tests.evaluation.tiny_run import copy_runs, only_run


def evaluated(tmp_path_factory, dest, steps, metrics, val_loss, prediction):
    """A copy of the session's tiny run, recorded as trained for ``steps`` and evaluated with ``metrics``."""
    run = only_run(copy_runs(tmp_path_factory, dest))
    update_status(run, steps=steps, final_val_loss=val_loss)
    atomic.write_json(run / "metrics-test.json", {"split": "test", "metrics": metrics, "n_examples": 2})
    row = {"id": "1", "prompt": "Input: name[X] Output:", "prediction": prediction, "references": ["X is a pub."]}
    atomic.write_text(run / "predictions-test.jsonl", json.dumps(row) + "\n")
    return run


def test_base_and_trained_side_by_side(tmp_path_factory, tmp_path, capsys):
    evaluated(tmp_path_factory, tmp_path / "runs" / "base", 0, {"bleu": 0.01, "rouge_l": 0.4}, 2.5, "")
    evaluated(tmp_path_factory, tmp_path / "runs" / "lora", 3, {"bleu": 0.6, "rouge_l": 0.3}, 0.5, "X is a pub.")
    assert main([str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["metric", "base", "lora", "(3", "steps)"]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:] if line and not line.startswith(" ")}
    assert table["bleu"] == ["0.01", "0.6", "better"]  # the base value in the base column
    assert table["rouge_l"] == ["0.4", "0.3"]  # worse after training: not called better
    assert table["val_loss"] == ["2.5", "0.5", "better"]  # lower is better
    assert "base:      ''" in lines and "trained:   'X is a pub.'" in lines


def test_needs_one_base_and_one_trained_run(tmp_path_factory, tmp_path, capsys):
    evaluated(tmp_path_factory, tmp_path / "runs" / "lora", 3, {"bleu": 0.6}, 0.5, "X")
    with pytest.raises(ValueError, match="0 base and 1 trained evaluated run"):
        before_after(tmp_path / "runs")
    assert main([str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
