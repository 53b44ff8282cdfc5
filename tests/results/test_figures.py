"""figures.py: valid, non-empty PNGs for a small runs tree."""

from __future__ import annotations

import importlib.util

from rosa import atomic
from tests.conftest import REPO
from tests.evaluation.tiny_run import copy_runs, only_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figures_main(argv) -> int:
    spec = importlib.util.spec_from_file_location("figures_cli", REPO / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_figures_are_valid_pngs(tmp_path_factory, tmp_path, capsys):
    root = tmp_path / "runs"
    for name, bleu in (("a", 0.3), ("b", 0.4)):
        run = only_run(copy_runs(tmp_path_factory, root / name))
        atomic.write_json(run / "metrics-test.json", {"split": "test", "metrics": {"bleu": bleu}, "n_examples": 3})
    out = tmp_path / "figures"
    assert figures_main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    expected = {out / "loss-e2e.png", out / "bleu-vs-params-e2e.png", out / "peak-memory.png"}
    assert {str(p) for p in expected} == set(printed)
    for path in expected:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_no_runs_exit_2(tmp_path):
    assert figures_main([str(tmp_path)]) == 2
