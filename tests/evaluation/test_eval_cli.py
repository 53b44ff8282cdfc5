"""eval.py on a tiny trained run: writes predictions/metrics, skips, --force, bad runs, exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from rosa import atomic
from rosa.evaluation.load import read_run_config
from rosa.evaluation.runner import evaluate_after_training
from rosa.runs import read_status, update_status
from tests.conftest import REPO
from tests.evaluation.tiny_run import copy_runs, only_run

FAST = ["--max-new-tokens", "8"]  # E2E keeps its 5 beams; few tokens keep the test quick


def load_cli():
    spec = importlib.util.spec_from_file_location("eval_cli", REPO / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def eval_main():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("TQDM_DISABLE", "1")
    yield load_cli()
    torch.set_num_threads(threads)


@pytest.fixture
def runs(tmp_path_factory, tmp_path):
    return copy_runs(tmp_path_factory, tmp_path / "runs")


def test_no_runs_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no runs below" in result.stderr


def test_evaluates_then_skips_then_force_redoes(runs, eval_main, capsys):
    run = only_run(runs)
    assert eval_main([str(runs), *FAST]) == 0
    out = capsys.readouterr().out
    assert f"{run}: test bleu=" in out and "merged" in out

    record = json.loads((run / "metrics-test.json").read_text())
    assert record["merged"] is True and record["split"] == "test"
    assert record["decoding"]["num_beams"] == 5 and record["decoding"]["no_repeat_ngram_size"] == 4
    assert set(record["metrics"]) >= {"bleu", "nist", "rouge_l", "cider"}
    predictions = [json.loads(line) for line in (run / "predictions-test.jsonl").read_text().splitlines()]
    assert len(predictions) == record["n_examples"]
    assert len({p["prompt"] for p in predictions}) == len(predictions)  # one output per unique MR
    assert all(p["references"] and "\n" not in p["generated"] for p in predictions)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    assert "eval/test/bleu" in acc.Tags()["scalars"] and "train/loss" in acc.Tags()["scalars"]

    assert eval_main([str(runs), *FAST]) == 0
    assert "skipped (already evaluated: metrics-test.json exists" in capsys.readouterr().out
    assert json.loads((run / "metrics-test.json").read_text())["evaluated"] == record["evaluated"]

    assert eval_main([str(run), *FAST, "--force", "--limit", "1", "--num-beams", "1"]) == 0
    again = json.loads((run / "metrics-test.json").read_text())
    assert again["n_examples"] == 1 and again["decoding"]["num_beams"] == 1


def test_failed_and_broken_runs_are_reported_and_others_still_run(tmp_path_factory, tmp_path, eval_main, capsys):
    good = only_run(copy_runs(tmp_path_factory, tmp_path / "runs" / "good"))
    failed = only_run(copy_runs(tmp_path_factory, tmp_path / "runs" / "failed"))
    broken = only_run(copy_runs(tmp_path_factory, tmp_path / "runs" / "broken"))
    update_status(failed, state="failed", error="RuntimeError: loss is nan")
    (broken / "adapter" / "adapter.safetensors").write_bytes(b"not a safetensors file")

    assert eval_main([str(tmp_path / "runs"), *FAST]) == 1
    captured = capsys.readouterr()
    assert f"{failed}: skipped (failed: RuntimeError: loss is nan)" in captured.out
    assert f"{broken}: FAILED" in captured.err and "adapter" in captured.err
    assert f"{good}: test bleu=" in captured.out
    assert (good / "metrics-test.json").exists() and not (broken / "metrics-test.json").exists()


def test_eval_at_end_failure_keeps_the_run_done(tmp_path_factory, tmp_path, capsys):
    run = only_run(copy_runs(tmp_path_factory, tmp_path / "runs"))
    atomic.write_text(run / "adapter" / "adapter.json", "{broken")
    config = read_run_config(run)
    config.train.eval_at_end = True  # the shared run was trained without it
    assert evaluate_after_training(config, run) == 4
    assert "trained, but evaluation failed" in capsys.readouterr().err
    assert read_status(run)["state"] == "done"


def test_garbage_metrics_truncated_adapter_and_half_written_run(tmp_path_factory, tmp_path, eval_main, capsys):
    """A garbage metrics-test.json is re-evaluated (named in one line), not taken as "already
    evaluated"; a truncated adapter is named in one line; a half-written run (config, a partial
    status, no checkpoint or adapter) is skipped; a finished run whose status.json is lost is
    evaluated (its record is in adapter/); the others evaluate, and compile_results tables them."""
    from tests.results.test_compile import compile_main

    root = tmp_path / "runs"
    garbage = only_run(copy_runs(tmp_path_factory, root / "garbage"))
    truncated = only_run(copy_runs(tmp_path_factory, root / "truncated"))
    half = only_run(copy_runs(tmp_path_factory, root / "half"))
    lost = only_run(copy_runs(tmp_path_factory, root / "lost"))
    (lost / "status.json").unlink()  # a finished run: its record is in adapter/
    (garbage / "metrics-test.json").write_text('{"metrics": {"bleu": 0.9')
    adapter_file = truncated / "adapter" / "adapter.safetensors"
    adapter_file.write_bytes(adapter_file.read_bytes()[:1000])
    for name in ("adapter", "checkpoints"):
        shutil.rmtree(half / name)
    (half / "status.json").write_text('{"state": "runn')

    assert eval_main([str(root), *FAST]) == 1
    captured = capsys.readouterr()
    assert f"{garbage}: test bleu=" in captured.out
    assert f"{lost}: test bleu=" in captured.out and read_status(lost)["state"] == "done"
    assert f"{garbage / 'metrics-test.json'} is not a metrics record" in captured.err
    assert (
        read_status(garbage)["state"] == "done"
        and "bleu" in json.loads((garbage / "metrics-test.json").read_text())["metrics"]
    )
    failed = [line for line in captured.err.splitlines() if str(truncated) in line]
    assert len(failed) == 1 and f"{adapter_file} is unreadable" in failed[0], captured.err
    assert f"{half}: skipped (corrupt: unreadable {half / 'status.json'})" in captured.out
    assert compile_main([str(root), "--out", str(tmp_path / "out")]) == 0
    markdown = capsys.readouterr().out
    assert (
        "garbage/e2e/" in markdown
        and "lost/e2e/" in markdown
        and f"{truncated}: not evaluated" in markdown
        and f"{half}: corrupt" in markdown
    )


def test_export_merged_saves_a_plain_hf_model_with_the_adapters_logits(runs, eval_main, tmp_path, capsys):
    """``eval.py <run> --export-merged DIR``: the merged model loads in transformers alone and gives the
    logits of the run's model with its adapter. Three training steps move the logits by ~0.02, less
    than bf16's rounding, so the adapter is randomised first: its effect (~1) is then far above the
    tolerance, and an export that dropped the adapter would fail."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from rosa.evaluation.load import load_run
    from rosa.models import load_model

    run = only_run(runs)
    adapter_file = run / "adapter" / "adapter.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file(
        {name: torch.randn(t.shape, generator=generator) * 0.1 for name, t in load_file(adapter_file).items()},
        adapter_file,
    )
    assert eval_main([str(runs), "--export-merged", str(tmp_path / "x")]) == 2  # a tree, not one run
    assert "needs one run folder" in capsys.readouterr().err
    assert eval_main([str(run), "--export-merged", str(tmp_path / "merged")]) == 0
    assert not (tmp_path / "merged.tmp").exists()
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    adapted = load_run(run, "cpu", merge=False)
    torch.manual_seed(adapted.run.seed)  # the tiny model's weights come from the run's seed, as in load_run
    base = load_model(adapted.run.model, adapted.tokenizer).eval()
    x = torch.randint(3, 200, (2, 12))
    with torch.no_grad():
        reference, got, without = (m(input_ids=x).logits for m in (adapted.model, exported, base))
    effect, error = float((reference - without).abs().max()), float((got - reference).abs().max())
    assert effect > 0.5, effect  # the adapter changes the model far beyond bf16's rounding
    assert error < 0.02 * effect, (error, effect)


def test_an_unmergeable_method_is_evaluated_unmerged(runs, monkeypatch):
    """``Method.mergeable = False`` (e.g. PEFT's prompt tuning): the model is used as it is, and says so."""
    from rosa.evaluation.load import load_run
    from rosa.methods.lora import LoRA

    monkeypatch.setattr(LoRA, "mergeable", False)
    loaded = load_run(only_run(runs), "cpu")
    assert not loaded.merged and loaded.merge_note == "method lora cannot be merged"
    assert any(type(m).__name__ == "LoRALayer" for m in loaded.model.modules())


# ----------------------------------------------------------------------------- the best adapter (train.keep_best)
@pytest.fixture(scope="module")
def best_tree(tmp_path_factory):
    """A tiny run that kept its best adapter (step 4) and stopped early at step 5 (the crafted validation
    losses of tests/training/faults.py); evaluation settles for 2 test prompts of 8 new tokens."""
    from tests.training import faults

    root = tmp_path_factory.mktemp("best-run") / "runs"
    with pytest.MonkeyPatch.context() as monkeypatch:
        faults.crafted_validation(monkeypatch)
        code, _run_dir = faults.train(root, *faults.SELECTED, "eval.limit=2", "eval.max_new_tokens=8")
    assert code == 0
    return root


@pytest.fixture
def best_run(best_tree, tmp_path):
    return only_run(shutil.copytree(best_tree, tmp_path / "runs"))


def test_the_best_adapter_is_evaluated_into_its_own_files(best_run, eval_main, capsys):
    """At the end of training both adapters are evaluated (keep_best is set); eval.py --checkpoint best
    writes the best one's files again and leaves the final adapter's alone."""
    run, config = best_run, read_run_config(best_run)
    config.train.eval_at_end = True  # trained without it (tests/training/faults.py)
    assert evaluate_after_training(config, run) == 0
    assert f"run {run}: best (step 4) test bleu=" in capsys.readouterr().out
    best, last = (json.loads((run / f"metrics-{name}.json").read_text()) for name in ("test-best", "test"))
    assert (best["checkpoint"], best["checkpoint_step"], last["checkpoint"], last["checkpoint_step"]) == (
        "best",
        4,
        "last",
        5,
    )
    assert (run / "predictions-test-best.jsonl").exists() and (run / "predictions-test.jsonl").exists()

    (run / "metrics-test-best.json").unlink()
    untouched = (run / "metrics-test.json").read_bytes()
    assert eval_main([str(run), "--checkpoint", "best", *FAST]) == 0
    assert f"{run}: best (step 4) test bleu=" in capsys.readouterr().out
    assert json.loads((run / "metrics-test-best.json").read_text())["checkpoint"] == "best"
    assert (run / "metrics-test.json").read_bytes() == untouched
    assert eval_main([str(run), "--checkpoint", "best", *FAST]) == 0
    assert "skipped (already evaluated: metrics-test-best.json exists" in capsys.readouterr().out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/test-best/bleu")][-1] == 4
    assert [e.step for e in acc.Scalars("eval/test/bleu")] == [5]


def test_checkpoint_best_loads_the_best_adapter(best_run):
    from safetensors.torch import load_file

    from rosa.evaluation.load import load_run

    loaded = load_run(best_run, "cpu", merge=False, checkpoint="best")
    state = loaded.method.state_dict(loaded.model)
    best, final = (load_file(best_run / name / "adapter.safetensors") for name in ("best", "adapter"))
    assert all(torch.equal(state[k], best[k]) for k in best)
    assert not all(torch.equal(state[k], final[k]) for k in final)


def test_checkpoint_best_of_a_run_without_one_is_one_clear_line(runs, eval_main, capsys):
    run = only_run(runs)
    assert eval_main([str(runs), "--checkpoint", "best", *FAST]) == 1
    err = capsys.readouterr().err
    assert (
        f"{run}: FAILED EvalError: {run / 'best'} does not exist: the run kept no best adapter "
        "(train.keep_best=None); allowed: --checkpoint last, or train.keep_best set when training"
    ) in err
    assert not list(run.glob("*-best.json*"))
