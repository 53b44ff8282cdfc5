"""compile_results.py: tables with the best value in bold, CSV and LaTeX, problem runs listed."""

from __future__ import annotations

import csv
import importlib.util
import io
import json

import pytest
import yaml

from rosa import atomic
from rosa.runs import update_status
from tests.conftest import REPO
from tests.evaluation.tiny_run import copy_runs, only_run


def compile_main(argv) -> int:
    spec = importlib.util.spec_from_file_location("compile_cli", REPO / "compile_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture
def tree(tmp_path_factory, tmp_path):
    """Runs a, b (LoRA, two budgets), c (full fine-tuning), plus unfinished, corrupt and unevaluated ones."""
    root = tmp_path / "runs"

    def make(name, metrics=None, **status):
        run = only_run(copy_runs(tmp_path_factory, root / name))
        if status:
            update_status(run, **status)
        if metrics is not None:
            atomic.write_json(run / "metrics-test.json", {"split": "test", "metrics": metrics, "n_examples": 3})
        return run

    runs = {
        "a": make("a", {"bleu": 0.30, "rouge_l": 0.50}),
        "b": make("b", {"bleu": 0.40, "rouge_l": 0.45}, trainable_params=2 * 116736),
        "c": make("c", {"bleu": 0.20, "rouge_l": 0.40}, trainable_params=1_900_000),
        "running": make("running", state="running", steps=2, total_steps=3),
        "corrupt": make("corrupt"),
        "unevaluated": make("unevaluated"),
    }

    def edit_config(run, **fnmodel):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["fnmodel"] = {**(config["fnmodel"] if "rank" in fnmodel else {}), **fnmodel}
        (run / "config.yaml").write_text(yaml.safe_dump(config))

    edit_config(runs["b"], rank=16)
    edit_config(runs["c"], name="fft")
    (runs["corrupt"] / "metrics-test.json").write_text('{"metrics": {"bleu": 0.9')
    return root, runs


def test_tables_bold_best_and_list_problem_runs(tree, tmp_path, capsys):
    root, runs = tree
    out = tmp_path / "out"
    assert compile_main([str(root), "--out", str(out)]) == 0
    markdown = capsys.readouterr().out
    rows = {
        name: next(line for line in markdown.splitlines() if line.startswith("|") and f"{name}/e2e/" in line)
        for name in ("a", "b", "c")
    }
    assert "**0.4**" in rows["b"] and "**0.5**" in rows["a"]
    assert "**" not in rows["c"]
    assert "| r~8 |" in rows["a"] and "| r~16 |" in rows["b"] and "| full |" in rows["c"]
    assert f"corrupt metrics file {runs['corrupt'] / 'metrics-test.json'}" in markdown
    assert f"{runs['running']}: running (step 2/3)" in markdown
    assert f"{runs['unevaluated']}: not evaluated on test" in markdown

    records = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert sorted(r["bleu"] for r in records) == ["0.2", "0.3", "0.4"]
    assert {r["method"] for r in records} == {"lora", "fft"}
    latex = (out / "results.tex").read_text()
    assert r"\textbf{0.4}" in latex and r"\begin{tabular}" in latex and latex.count(r"\midrule") >= 3
    assert (out / "results.md").read_text().strip() == markdown.strip()


def test_no_runs_exit_2(tmp_path, capsys):
    assert compile_main([str(tmp_path)]) == 2
    assert "no runs below" in capsys.readouterr().err


def test_density_column_is_the_adapters_own(tree):
    """A density from a budget or a mask file (fnmodel.density=null) is the one the run's adapter
    holds, not the configured null."""
    from rosa.results.compile import read_run

    _root, runs = tree
    run = runs["a"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["fnmodel"].update(name="rosa-robust", density=None)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    adapter = json.loads((run / "adapter" / "adapter.json").read_text())
    adapter["extra_state"] = {"phase": "sparse", "density": 0.0123}
    (run / "adapter" / "adapter.json").write_text(json.dumps(adapter))
    assert read_run(run, "test").density == 0.0123


@pytest.mark.parametrize("dataset", ["e2e", "eli5", "gsm8k", "sql", "viggo"])
def test_tables_and_figures_take_one_headline_from_the_spec(dataset, tmp_path):
    from rosa.data import get_spec
    from rosa.results.compile import RunRow, metric_order
    from rosa.results.figures import headline_metric

    spec = get_spec(dataset)
    row = RunRow(tmp_path, dataset=dataset, metrics={"other": 1.0, **{m: 1.0 for m in reversed(spec.metrics)}})
    assert metric_order(dataset, [row]) == [*spec.metrics, "other"]  # the spec's order, the headline first
    assert metric_order(dataset, [row])[0] == headline_metric(dataset) == spec.headline_metric
    assert headline_metric("eli5") == "ppl"


def test_rows_from_different_code_are_flagged(tree, tmp_path):
    """Each row names the code that trained it; a table whose rows do not all come from one clean commit
    carries a warning (mixed commits, a dirty tree, a resume under other code, or unknown code);
    commits that share the result code's fingerprint are one code."""
    from rosa.results.compile import build_tables, code_label, to_markdown

    root, runs = tree
    clean = {"commit": "a" * 40, "dirty": [], "from_step": 0}
    for name in ("a", "b", "c"):
        update_status(runs[name], trained_with=[clean])
    tables, orphans = build_tables(root)
    assert tables[0].warning is None and "> warning" not in to_markdown(tables, orphans, "test")
    assert {r["code"] for r in tables[0].raw} == {"aaaaaaa"}

    update_status(runs["b"], trained_with=[clean, {"commit": "b" * 40, "dirty": [], "from_step": 4}])
    tables, orphans = build_tables(root)
    assert "aaaaaaa > bbbbbbb (1 run)" in tables[0].warning and "aaaaaaa (2 runs)" in tables[0].warning
    assert f"> {tables[0].warning}" in to_markdown(tables, orphans, "test")
    assert code_label([{**clean, "dirty": ["rosa/x.py"]}]) == "aaaaaaa+dirty"
    assert code_label(None) == "unknown"

    # with the code fingerprint: commits that differ only outside the result code are one code
    for name, commit in (("a", "a"), ("b", "b"), ("c", "c")):
        update_status(
            runs[name], trained_with=[{"commit": commit * 40, "dirty": ["docs/x.md"], "code": "f1", "from_step": 0}]
        )
    tables, orphans = build_tables(root)
    assert tables[0].warning is None and {r["code"] for r in tables[0].raw} == {"aaaaaaa", "bbbbbbb", "ccccccc"}
    update_status(runs["c"], trained_with=[{"commit": "c" * 40, "dirty": [], "code": "f2", "from_step": 0}])
    assert "ccccccc (1 run)" in build_tables(root)[0][0].warning
    update_status(runs["c"], trained_with=[{"commit": "c" * 40, "dirty": ["rosa/x.py"], "code": "f1", "from_step": 0}])
    assert "ccccccc+dirty (1 run)" in build_tables(root)[0][0].warning


def test_a_best_adapter_evaluated_too_has_its_own_row(tree, tmp_path, capsys):
    """eval.py --checkpoint best (metrics-test-best.json): a second row of the run, its method naming
    the adapter and its step; the CSV says which adapter each row is."""
    root, runs = tree
    atomic.write_json(
        runs["a"] / "metrics-test-best.json",
        {"split": "test", "checkpoint": "best", "checkpoint_step": 2, "metrics": {"bleu": 0.45}, "n_examples": 3},
    )
    out = tmp_path / "out"
    assert compile_main([str(root), "--out", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|") and "a/e2e/" in line]
    assert len(rows) == 2
    best = next(line for line in rows if "| lora (best@2) |" in line)
    assert "**0.45**" in best and "| lora |" in next(line for line in rows if line != best)
    records = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert sorted((r["checkpoint"], r["method"], r["bleu"]) for r in records if "/a/" in r["run"]) == [
        ("best", "lora (best@2)", "0.45"),
        ("last", "lora", "0.3"),
    ]
    assert {r["checkpoint"] for r in records if "/a/" not in r["run"]} == {"last"}
