"""bench/mini_report.py: the page from committed cells alone: n, mean +- std, paired intervals, a
ranking only where an interval excludes 0, a warning when the cells come from different code, and
--verify's last-digit comparison of a rerun with its cell."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import mini_report  # noqa: E402

GOLD = [f"inform(name[Game {i}], rating[{'good' if i % 2 else 'poor'}])" for i in range(120)]
WRONG = "request(name[Nothing])"


def cell(folder: Path, method: str, seed: int, right: float, code: str = "f1", steps: int = 200) -> Path:
    """A committed ViGGO cell whose predictions are right on a ``right`` share of the rows (seeded)."""
    path = folder / "grid" / "viggo" / method / f"smollm2-135m-{method}-s{seed}"
    path.mkdir(parents=True)
    rng = random.Random(f"{method}{seed}")
    preds = [g if rng.random() < right else WRONG for g in GOLD]
    trained_with = [{"commit": code * 20, "dirty": [], "code": code, "from_step": 0}]
    (path / "config.yaml").write_text(
        json.dumps(
            {
                "model": {"name": "smollm2-135m"},
                "dataset": {"name": "viggo"},
                "fnmodel": {"name": method, "rank": 8},
                "seed": seed,
                "threads": 2,
                "eval": {"split": "validation"},
            }
        )
    )
    (path / "status.json").write_text(
        json.dumps(
            {
                "state": "done",
                "steps": steps,
                "trainable_params": 2442240,
                "trained_with": trained_with,
                "precision": "fp32",
                "started": "2026-12-05T10:00:00",
                "train_time_s": 600.0,
                "step_time_s": 3.0,
                "peak_mem_gb": 4.0,
                "final_val_loss": 0.1,
            }
        )
    )
    from rosa.data.viggo import score

    (path / "metrics-validation.json").write_text(
        json.dumps(
            {
                "metrics": score(preds, [[g] for g in GOLD]),
                "n_examples": len(GOLD),
                "evaluated": "2026-12-05T10:15:00",
                "code": trained_with[0],
                "trained_with": trained_with,
            }
        )
    )
    (path / "predictions-validation.jsonl").write_text(
        "".join(
            json.dumps({"id": f"viggo:validation:{i:03d}", "generated": p, "prediction": p, "references": [g]}) + "\n"
            for i, (p, g) in enumerate(zip(preds, GOLD))
        )
    )
    return path


@pytest.fixture
def folder(tmp_path):
    for seed in (1, 2, 3):
        cell(tmp_path, "lora", seed, 0.5)
        cell(tmp_path, "rosa-robust", seed, 0.9)  # far better: resolved
        cell(tmp_path, "spa", seed, 0.5)  # the same rate: not resolved
    return tmp_path


def test_the_page_shows_seeds_intervals_and_only_resolved_rankings(folder):
    text = mini_report.render(folder, figures=None)
    assert "> warning" not in text
    assert "| lora | 3 | 2,442,240 |" in text and " ± " in text  # n and mean +- std
    assert "- rosa-robust > lora on exact match: +0." in text
    spa = next(line for line in text.splitlines() if line.startswith("- spa vs lora on exact match"))
    assert spa.endswith("not resolved")
    assert "| rosa-robust | 3 | +0." in text  # the difference table
    assert "0.934 (RoSA r=4, d=0.45%)" in text  # the paper beside ours
    assert "2.25 h of wall time for 9 cells" in text  # 9 x 900 s
    assert "median wall time of its method's cells: 2.25 h" in text
    assert "0 of 17 cells" in text and "committed but not in the grids" in text


def test_the_page_warns_when_cells_come_from_different_code(folder):
    cell(folder, "rosa-orthogonal", 1, 0.5, code="f2")
    text = mini_report.render(folder, figures=None)
    assert text.startswith("> warning: these rows were not all trained by the same committed code")
    assert "f2f2f2f (1 run)" in text


def test_the_figures_are_written(folder, tmp_path):
    mini_report.render(folder, figures=tmp_path / "figures")
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "mini-viggo.png",
        "mini-viggo-vs-lora.png",
        "mini-learning-curve.png",
    }


def test_verify_compares_a_rerun_to_the_last_digit(folder, tmp_path):
    committed = folder / "grid" / "viggo" / "lora" / "smollm2-135m-lora-s1"
    rerun = tmp_path / "rerun" / "viggo" / "lora" / committed.name
    rerun.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(committed, rerun)
    assert mini_report.verify(rerun, folder / "grid") == ("viggo/lora/smollm2-135m-lora-s1", True, "")
    record = json.loads((rerun / "metrics-validation.json").read_text())
    record["metrics"]["slot_f1"] = float.fromhex(float(record["metrics"]["slot_f1"]).hex()[:-1] + "0") + 1e-16
    (rerun / "metrics-validation.json").write_text(json.dumps(record))
    cell_name, equal, detail = mini_report.verify(rerun, folder / "grid")
    assert not equal and "slot_f1" in detail


def test_a_recorded_rerun_names_the_code_that_made_it(folder, tmp_path, monkeypatch):
    """reruns.json takes the rerun's commit and code fingerprint from its own status.json (the clean
    clone that ran it), not from the checkout that compares."""
    committed = folder / "grid" / "viggo" / "lora" / "smollm2-135m-lora-s1"
    monkeypatch.setattr(mini_report, "command", lambda cell: f"python train.py <{cell}>")
    mini_report.record_rerun("viggo/lora/smollm2-135m-lora-s1", True, "", committed, folder)
    (entry,) = json.loads((folder / "reruns.json").read_text())
    assert (entry["commit"], entry["code"], entry["equal"]) == ("f1" * 20, "f1", True)
    assert "| viggo/lora/smollm2-135m-lora-s1 | f1f1f1f | f1 |" in mini_report.render(folder, figures=None)


def test_a_rerun_without_a_committed_cell_is_one_line_and_status_2(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        mini_report.verify(tmp_path / "runs" / "viggo" / "lora" / "nothing", folder / "grid")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "no committed cell" in err


def test_rankings_from_fewer_than_three_seeds_say_so(folder, tmp_path_factory):
    assert "Rankings from fewer than 3 seeds" not in mini_report.render(folder, figures=None)
    one_seed = tmp_path_factory.mktemp("one-seed")
    cell(one_seed, "lora", 1, 0.5)
    cell(one_seed, "rosa-robust", 1, 0.9)
    text = mini_report.render(one_seed, figures=None)
    assert "- rosa-robust > lora on exact match: +0." in text
    assert "Rankings from fewer than 3 seeds (rosa-robust) hold for those seeds" in text


def test_the_median_total_discounts_one_slowed_seed(folder):
    """A cell slowed by other work counts at its method's median: 8 x 900 s + 900 s, not 8 x 900 + 9,000."""
    status = folder / "grid" / "viggo" / "spa" / "smollm2-135m-spa-s2" / "status.json"
    record = json.loads(status.read_text())
    record["started"] = "2026-12-05T07:45:00"  # 9,000 s before its evaluation ended
    status.write_text(json.dumps(record))
    text = mini_report.render(folder, figures=None)
    assert "4.50 h of wall time for 9 cells" in text  # 8 x 900 + 9,000 s
    assert "median wall time of its method's cells: 2.25 h" in text


def test_each_claim_gets_the_verdict_its_interval_supports():
    from rosa.results.stats import Difference

    above, below, zero = (Difference("bleu", 3, m, m - 0.01, m + 0.01) for m in (0.05, -0.05, 0.0))
    assert mini_report.claim_verdict(">=", above) == "holds, resolved"
    assert mini_report.claim_verdict(">=", zero) == "consistent: not resolved"
    assert mini_report.claim_verdict(">=", below) == "contradicted, resolved"
    assert mini_report.claim_verdict("<", below) == "holds, resolved"
    assert mini_report.claim_verdict("<", above) == "contradicted, resolved"
    assert mini_report.claim_verdict(">", zero) == "not resolved"
    assert mini_report.claim_verdict("=", zero) == "holds: no resolved difference"
    assert mini_report.claim_verdict("=", above) == "not reproduced: above LoRA, resolved"


def test_the_page_tests_the_papers_claims(folder):
    text = mini_report.render(folder, figures=None)
    claims = {
        line.split(" | ")[1]: line
        for line in text.splitlines()
        if line.startswith("| RoSA |") or line.startswith("| ROSA |")
    }
    assert claims["RoSA ≥ LoRA (93.4 vs 90.5)"].endswith("| 3 | holds, resolved |")
    assert claims["SpA < LoRA (72.6 vs 90.5)"].endswith("| 3 | not resolved |")  # the same rate here
    assert claims["FFT < LoRA (82.1 vs 90.5)"].endswith("| – | not tested |")  # no fft cell
    assert claims["ROSA ≈ LoRA at equal rank (bits per token)"].endswith("| not tested |")


def test_the_e2e_table_gives_rosas_metric_in_bits_per_token(tmp_path):
    metrics = {"bleu": 0.5, "nist": 7.0, "meteor": 0.4, "rouge_l": 0.6, "cider": 1.7}
    lora = mini_report.Cell(
        tmp_path, "e2e", "lora", 1, 200, 2, metrics, 2442240, 3.0, 600.0, 4.0, 900.0, "f1", "f1", 630,
        val_loss=2 * math.log(2),
    )  # fmt: skip
    table, diffs = mini_report.e2e_tables([lora])
    assert table[-1] == "| lora | 1 | 630 | 2,442,240 | 0.5000 | 7.0000 | 0.4000 | 0.6000 | 1.7000 | 2.0000 | 600 |"
    assert diffs == {}
