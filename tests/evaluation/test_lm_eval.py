"""The lm-evaluation-harness bridge (rosa/evaluation/lm_eval.py): ``eval.py RUN --lm-eval gsm8k_local`` on
tiny LoRA (merged, also run by ``eval.lm_eval`` after training), rosa-robust (unmerged) and NF4 runs,
``compile_results`` columns, one-line errors, and lm-eval's GSM8k scores against ours: on the tiny
model's generations and on crafted answers and references passed through lm-eval's own pipeline
(its task config, filters, metric and aggregation)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
import torch

from rosa.evaluation import lm_eval as bridge
from rosa.evaluation.scoring import compute_metrics, postprocess
from rosa.schema import ConfigError
from tests.conftest import SHARED_DATA, shared_data_or_skip
from tests.evaluation.test_eval_cli import load_cli
from tests.results.test_compile import compile_main
from tests.training.faults import train

needs_nf4 = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao (NF4) is not installed")
GSM8K = ["dataset=gsm8k", "train.max_steps=2", "device=cpu"]  # the built-in GSM8k sample
ROBUST = [
    "fnmodel=rosa-robust",
    "fnmodel.rank=4",
    "fnmodel.density=0.02",
    "fnmodel.warmup_steps=1",
    "fnmodel.mask_samples=2",
]
FILTERS = {"strict-match": "exact_match_strict", "flexible-extract": "exact_match_flexible"}  # lm-eval's -> ours
LM_EVAL = ["--lm-eval", "gsm8k_local", "--lm-eval-limit", "2"]


@pytest.fixture(scope="module", autouse=True)
def quiet_and_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("TQDM_DISABLE", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny GSM8k runs of 2 steps: ``merged/`` holds LoRA (which runs gsm8k_local on 1 document
    after training: eval.lm_eval) and LoRA on an NF4 base (with torchao); ``unmerged/`` holds rosa-robust.
    Returns the root, the run folders and the LoRA run's lm-eval record as training left it."""
    shared_data_or_skip()
    root = tmp_path_factory.mktemp("lm-eval-runs")
    made = {}
    cases = {
        "lora": ("merged", ["eval.lm_eval=[gsm8k_local]", "eval.lm_eval_limit=1"]),
        "rosa-robust": ("unmerged", ROBUST),
    }
    if importlib.util.find_spec("torchao") is not None:
        cases["nf4"] = ("merged", ["precision=nf4"])
    for name, (group, overrides) in cases.items():
        code, made[name] = train(root / group, *GSM8K, *overrides)
        assert code == 0, name
    return root, made, record(made["lora"])


@pytest.fixture(scope="module")
def evaluated(runs):
    """``runs`` after the eval.py and compile_results.py commands of the tests below; their output."""
    root, made, _ = runs
    commands = {
        "lora again": [str(made["lora"]), *LM_EVAL],
        "lora forced": [str(made["lora"]), *LM_EVAL, "--force"],
        "unmerged": [str(root / "unmerged"), *LM_EVAL, "--no-merge", "--num-fewshot", "0"],
    }
    if "nf4" in made:
        commands["nf4"] = [str(made["nf4"]), *LM_EVAL, "--num-fewshot", "0"]
    out = {}
    for name, argv in commands.items():
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert load_cli()(argv) == 0, name
        out[name] = printed.getvalue()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert compile_main([str(root)]) == 0
    out["compile"] = printed.getvalue()
    return root, made, out


def record(run: Path) -> dict:
    return json.loads(bridge.result_path(run, "gsm8k_local").read_text())


def samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in bridge.samples_path(run, "gsm8k_local").read_text().splitlines()]


# ----------------------------------------------------------------------------- the local task


def test_gsm8k_local_is_lm_evals_gsm8k_task_over_the_shared_files():
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    shared_data_or_skip()
    theirs = load_yaml(Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml")
    ours = bridge.local_task_config(bridge.local_tasks()["gsm8k_local"])
    for key in ("doc_to_text", "doc_to_target", "num_fewshot", "fewshot_split", "generation_kwargs", "filter_list"):
        assert ours[key] == theirs[key], key
    assert ours["metric_list"] == theirs["metric_list"] and ours["test_split"] == "test"
    assert ours["task"] == "gsm8k_local" and ours["dataset_path"] == "json"
    files = ours["dataset_kwargs"]["data_files"]
    assert files == {split: str((SHARED_DATA / "gsm8k" / f"{split}.jsonl").resolve()) for split in ("train", "test")}


def test_task_names_are_checked_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"--lm-eval: unknown task 'gsm8k_lcoal' \(did you mean 'gsm8k_local'\?\)"):
        bridge.resolve_tasks(["gsm8k_lcoal"])
    with pytest.raises(ConfigError, match="one or more task names"):
        bridge.resolve_tasks(["gsm8k_local", " "])
    (tmp_path / "gone.yaml").write_text(
        "include: gsm8k/gsm8k.yaml\ntask: gone\ndataset_path: json\n"
        "dataset_kwargs: {data_files: {train: nowhere/train.jsonl, test: nowhere/test.jsonl}}\n"
    )
    monkeypatch.setattr(bridge, "TASKS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=f"eval.lm_eval: task 'gone' reads {tmp_path}/nowhere/train.jsonl, which"):
        bridge.resolve_tasks(["gone"], key="eval.lm_eval")
    # the same check as the run is built: one line, exit status 2, no run folder
    code, run_dir = train(tmp_path / "runs", *GSM8K, "eval.lm_eval=[gone]")
    assert code == 2 and not run_dir.exists()


def test_lm_eval_failing_after_training_gives_exit_status_4(runs, tmp_path, monkeypatch, capsys):
    from rosa.evaluation.load import read_run_config
    from rosa.evaluation.runner import evaluate_after_training
    from rosa.runs import read_status

    run = runs[1]["lora"]
    (tmp_path / "gone.yaml").write_text(
        "include: gsm8k/gsm8k.yaml\ntask: gone\ndataset_kwargs: {data_files: x.jsonl}\n"
    )
    monkeypatch.setattr(bridge, "TASKS_DIR", tmp_path)
    config = read_run_config(run)
    config.train.eval_at_end, config.eval.lm_eval = False, ["gone"]
    assert evaluate_after_training(config, run) == 4
    err = capsys.readouterr().err
    assert "trained, but lm-eval failed: ConfigError: eval.lm_eval: task 'gone' reads" in err
    assert f"(retry with: python eval.py {run} --lm-eval gone)" in err and read_status(run)["state"] == "done"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lm-eval-limit", "2"], "--lm-eval-limit needs --lm-eval"),
        (["--lm-eval", "gsm8k_local", "--limit", "2"], "--limit does not apply to --lm-eval tasks"),
        (["--lm-eval", "gsm8k_local", "--lm-eval-limit", "0"], "--lm-eval-limit=0; allowed: an integer >= 1"),
        (["--lm-eval", "gsm8k_local,,"], "allowed: one or more task names"),
    ],
)
def test_bad_eval_options_exit_2_in_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        load_cli()([str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.strip().count("\n") == 0


# ----------------------------------------------------------------------------- runs


def test_lm_eval_after_training(runs):
    after_training = runs[2]  # eval.lm_eval=[gsm8k_local], eval.lm_eval_limit=1
    assert after_training["limit"] == 1 and after_training["n_samples"] == {"gsm8k_local": 1}
    assert after_training["merged"] is True and after_training["lm_eval_version"] == "0.4.13"
    assert after_training["code"]["commit"] and after_training["trained_with"][0]["commit"]


def test_eval_py_skips_an_evaluated_task_then_force_redoes_it(evaluated):
    _root, made, out = evaluated
    run = made["lora"]
    assert "skipped (already evaluated: lm_eval-gsm8k_local.json exist" in out["lora again"]
    assert f"{run}: lm-eval gsm8k_local exact_match,strict-match=" in out["lora forced"]
    assert "(n=2, 5-shot, merged" in out["lora forced"]
    redone = record(run)
    assert redone["limit"] == 2 and redone["n_samples"] == {"gsm8k_local": 2} and redone["n_shot"]["gsm8k_local"] == 5
    assert set(redone["metrics"]["gsm8k_local"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert len(samples(run)) == 2 * 2  # 2 documents x 2 filters


def test_rosa_robust_runs_unmerged(evaluated):
    _root, made, out = evaluated
    assert "(n=2, 0-shot, unmerged" in out["unmerged"] and "generated unmerged (merging off" in out["unmerged"]
    robust = record(made["rosa-robust"])
    assert robust["method"] == "rosa-robust" and robust["merged"] is False and robust["n_shot"]["gsm8k_local"] == 0
    assert robust["n_samples"] == {"gsm8k_local": 2}


@needs_nf4
def test_nf4_run(evaluated):
    _root, made, out = evaluated
    nf4 = record(made["nf4"])
    assert nf4["precision"] == "nf4" and nf4["merged"] is True and nf4["n_samples"] == {"gsm8k_local": 2}
    assert f"{made['nf4']}: lm-eval gsm8k_local" in out["nf4"]


def test_compile_results_shows_the_lm_eval_columns(evaluated):
    root, made, out = evaluated
    header = next(line for line in out["compile"].splitlines() if line.startswith("| model"))
    assert "| gsm8k_local/exact_match,strict-match | gsm8k_local/exact_match,flexible-extract |" in header
    rows = [line for line in out["compile"].splitlines() if "gsm8k/" in line]  # none has our metrics-test.json
    assert len(rows) == len(made) and sum("rosa-robust" in r for r in rows) == 1
    assert sum("nf4" in r for r in rows) == ("nf4" in made)
    value = record(made["rosa-robust"])["metrics"]["gsm8k_local"]["exact_match,flexible-extract"]
    robust = next(r for r in rows if "rosa-robust" in r).split("|")
    assert float(robust[header.split("|").index(" gsm8k_local/exact_match,flexible-extract ")].strip(" *")) == value
    assert "gsm8k_local/exact_match,strict-match" in (root / "results.csv").read_text().splitlines()[0]


# ----------------------------------------------------------------------------- lm-eval's scores = ours


def ours(response: str, reference: str) -> dict[str, float]:
    """Our GSM8k scores of one generated text (as eval.py scores it: postprocess, then the metrics)."""
    return compute_metrics("gsm8k", [postprocess("gsm8k", response)], [[reference]])


def assert_lm_eval_scores_equal_ours(logged: list[dict], aggregate: dict) -> None:
    """Each logged sample (one per document and filter): lm-eval's exact_match == ours on the raw
    response; and each filter's aggregate == the mean of ours."""
    per_filter: dict[str, list[float]] = {f: [] for f in FILTERS}
    for sample in logged:
        (response,) = sample["resps"][0]
        mine = ours(response, sample["target"])[FILTERS[sample["filter"]]]
        assert float(sample["exact_match"]) == mine, (sample["filter"], response, sample["target"])
        per_filter[sample["filter"]].append(mine)
    for name, values in per_filter.items():
        assert values and aggregate[f"exact_match,{name}"] == pytest.approx(sum(values) / len(values))


def check_run(run) -> dict[str, float]:
    """lm-eval's gsm8k_local scores of ``run`` equal ours on its logged generations; returns lm-eval's
    aggregate. Also for a real run (SmolLM2, docs/evaluation.md):
    ``python -c "from tests.evaluation.test_lm_eval import check_run; print(check_run('RUN'))"``."""
    aggregate = record(Path(run))["metrics"]["gsm8k_local"]
    assert_lm_eval_scores_equal_ours(samples(Path(run)), aggregate)
    return aggregate


def test_lm_eval_scores_of_the_tiny_models_generations_equal_ours(evaluated):
    """On the runs' generations (the tiny model writes no number: every score is 0 on both sides; the
    crafted test below is the one that tells scorers apart), and lm-eval read the shared test rows
    in order with its own prompt."""
    _root, made, _out = evaluated
    test_rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]]
    for name, run in made.items():
        logged = samples(run)
        assert logged and all(isinstance(s["resps"][0][0], str) for s in logged), name
        for sample in logged:
            row = test_rows[sample["doc_id"]]
            assert sample["target"] == row["answer"] and sample["prompt"][0].endswith(
                f"Question: {row['question']}\nAnswer:"
            )
        check_run(run)


# (reference answer, response, strict, flexible): lm-eval's definitions, which ours must give too
CRAFTED = [
    ("3 + 4 = 7\n#### 7", "She has 3 + 4 = 7.\n#### 7", 1, 1),
    ("3 + 4 = 7\n#### 7", "So the answer is 7.", 0, 1),  # no "#### ": flexible only
    ("3 + 4 = 7\n#### 7", "#### 8", 0, 0),
    ("2 * 617 = 1234\n#### 1234", "#### 1,234", 1, 1),  # commas removed
    ("2 * 617 = 1234\n#### 1234", "It costs $1,234.", 0, 1),  # "$", commas and the trailing period
    ("x\n#### 1,234", "#### 1234", 1, 1),  # commas in the reference too
    ("x\n#### 18", "#### $18", 0, 1),  # "#### $" misses the strict pattern
    ("x\n#### 18", "#### 18.", 1, 1),
    ("x\n#### 18", "####18", 0, 1),  # no space after ####
    ("x\n#### 18", "#### 18 and then #### 0", 1, 0),  # strict: the first match, flexible: the last
    ("x\n#### 18", "#### 0 but really 18", 0, 1),
    ("x\n#### 18", "18.00", 0, 0),
    ("x\n#### 18", "#### -18", 0, 0),
    ("x\n#### 18", "", 0, 0),
    ("x\n#### -3", "#### -3", 1, 1),
    ("x\n#### 18", "#### 1,8", 1, 1),  # every comma goes, even one inside a number
    ("#### 5 then\n#### 18", "#### 18", 1, 1),  # the reference's last "#### " counts
    ("no marker, just 18", "#### 18", 0, 0),  # a reference without "#### " stays whole
    ("x\n####18", "#### 18", 0, 0),  # ... also without the space (ours took the text after "####")
    ("x\n#### 18 ", "#### 18", 0, 0),  # nothing is stripped (ours stripped the reference)
    ("x\n#### 18\n", "#### 18", 0, 0),
]


class CraftedLM:
    """An lm-eval model whose generation for each question is the crafted response."""

    def __new__(cls, responses: dict[str, str]):
        from lm_eval.api.model import LM

        class Crafted(LM):
            def generate_until(self, requests, disable_tqdm=False):
                return [responses[r.doc["question"]] for r in requests]

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return Crafted()


def test_lm_eval_scores_of_crafted_answers_and_references_equal_ours(tmp_path, monkeypatch):
    """The crafted rows as a local task (a YAML over a JSON Lines file, as gsm8k_local) run through
    lm-eval's simple_evaluate with a model that answers the crafted responses: lm-eval's filters,
    metric and aggregation against ours, row by row, both equal to the expected scores."""
    import lm_eval

    rows = [{"question": f"q{i}", "answer": ref} for i, (ref, *_rest) in enumerate(CRAFTED)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "crafted.yaml").write_text(
        "include: gsm8k/gsm8k.yaml\ntask: gsm8k_crafted\ndataset_path: json\ndataset_name: null\n"
        "dataset_kwargs: {data_files: {train: rows.jsonl, test: rows.jsonl}}\n"
    )
    monkeypatch.setattr(bridge, "TASKS_DIR", tmp_path)
    tasks = bridge.resolve_tasks(["gsm8k_crafted"])
    model = CraftedLM({f"q{i}": response for i, (_ref, response, *_s) in enumerate(CRAFTED)})
    results = lm_eval.simple_evaluate(
        model, tasks=[tasks.specs["gsm8k_crafted"]], task_manager=tasks.manager, num_fewshot=0, log_samples=True
    )
    logged = results["samples"]["gsm8k_crafted"]
    assert len(logged) == 2 * len(CRAFTED)
    assert_lm_eval_scores_equal_ours(logged, results["results"]["gsm8k_crafted"])
    expected = {
        (f"q{i}", f): s
        for i, (*_rr, strict, flex) in enumerate(CRAFTED)
        for f, s in (("strict-match", strict), ("flexible-extract", flex))
    }
    assert {(s["doc"]["question"], s["filter"]): float(s["exact_match"]) for s in logged} == expected
