"""Evaluate one finished run on one split: generate, score, and record the result in the run folder.

Per run and split (all written atomically):
    predictions-<split>.jsonl   id, prompt, generated (cut at the stop string), prediction (scored), references
    metrics-<split>.json        metrics, n examples, decoding, merged or not, times, the checkpoint
and the metrics go to the run's tracker (TensorBoard, and MLflow or W&B when the run chose one:
``rosa.tracking``) as ``eval/<split>/<metric>`` at the run's last step. The best adapter
(``checkpoint="best"``, ``<run>/best`` of ``train.keep_best``) has its own files,
``predictions-<split>-best.jsonl`` and ``metrics-<split>-best.json``, and ``eval/<split>-best/<metric>``
at its step, so the results of both adapters stay side by side.

Generation datasets: one output per unique prompt (``eval_examples``: E2E groups its rows by MR),
scored by :func:`rosa.evaluation.scoring.compute_metrics` with the dataset's own metrics (its spec).
Language modelling (ELI5): the mean token NLL over the split's 128-token blocks gives ``ppl`` and
``bits_per_token`` (``loss`` in nats, :func:`rosa.metrics.perplexity.lm_metrics`); ROUGE-L of generated
answers is added only with ``generate_lm=True`` (prompt: the question title). Every name reported is
one of ``spec.metrics``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rosa import atomic
from rosa.data import build_train_features, collate_batch, eval_examples, get_spec, load_examples
from rosa.data.features import tokenize
from rosa.evaluation.generate import decoding_for, generate
from rosa.evaluation.load import EvalError, LoadedRun, load_run
from rosa.provenance import code_version
from rosa.runs import BEST_RECORD, CHECKPOINT_NAMES, recover_status, result_name
from rosa.tracking import open_tracker

SPLITS = ("validation", "test")
PROGRESS_EVERY_S = 10.0
log = logging.getLogger("rosa")


def metrics_path(run_dir: Path, split: str, checkpoint: str = "last") -> Path:
    return Path(run_dir) / f"metrics-{result_name(split, checkpoint)}.json"


def summary_line(name: str, record: dict) -> str:
    scores = " ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items())
    merged = "merged" if record.get("merged") else "unmerged"
    best = f" best (step {record['checkpoint_step']})" if record.get("checkpoint") == "best" else ""
    return f"{name}:{best} {record['split']} {scores} (n={record['n_examples']}, {merged}, {record['time_s']:.1f}s)"


def evaluate_run(
    run_dir,
    split: str = "test",
    limit: int | None = None,
    batch_size: int | None = None,
    force: bool = False,
    device: str | None = None,
    merge: bool | None = None,
    generate_lm: bool = False,
    progress: bool = True,
    checkpoint: str = "last",
    **decoding,
) -> dict:
    """Evaluate ``run_dir``'s final adapter (``checkpoint="last"``) or its best (``"best"``) on ``split``.
    Returns ``{"state": "evaluated" | "skipped", ...}``; a run that cannot be evaluated raises
    (EvalError or the underlying error)."""
    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise EvalError(f"split {split!r}; allowed: {', '.join(SPLITS)}")
    if checkpoint not in CHECKPOINT_NAMES:
        raise EvalError(f"checkpoint {checkpoint!r}; allowed: {', '.join(CHECKPOINT_NAMES)}")
    status = recover_status(run_dir)  # a finished run's lost status.json comes back from its adapter folder
    state = (status or {}).get("state", "not started")
    if state != "done":
        error = (status or {}).get("error")
        return {"run": str(run_dir), "state": "skipped", "reason": f"{state}" + (f": {error}" if error else "")}
    out = metrics_path(run_dir, split, checkpoint)
    if out.exists() and not force:
        problem = metrics_problem(out, split)
        if problem is None:
            return {
                "run": str(run_dir),
                "state": "skipped",
                "reason": f"already evaluated: {out.name} exists; --force redoes it",
            }
        print(f"warning: {out} is not a metrics record ({problem}); evaluating the run again", file=sys.stderr)

    started = time.time()
    loaded = load_run(run_dir, device=device, merge=merge, checkpoint=checkpoint)
    step = (status or {}).get("steps", 0)
    if checkpoint == "best":
        step = atomic.read_json(Path(run_dir) / BEST_RECORD)["best_step"]
    run = loaded.run
    spec = get_spec(run.dataset.name)
    examples, _report = load_examples(run.dataset, split)
    examples = _scored_examples(loaded, spec, examples, limit or run.eval.limit, decoding)
    log.info("%s: evaluating %d %s examples (eval.limit caps them)", run_dir.name, len(examples), split)
    batch = batch_size or run.eval.batch_size
    bar = ProgressLog(
        tqdm(
            total=len(examples), desc=run_dir.name, dynamic_ncols=True, disable=None if progress else True, leave=False
        ),
        run_dir.name,
    )
    record = {
        "split": split,
        "checkpoint": checkpoint,  # the final adapter (last) or train.keep_best's (best)
        "checkpoint_step": step,
        "dataset": spec.name,
        "method": run.fnmodel.name,
        "merged": loaded.merged,
        "merge_note": loaded.merge_note,
        "batch_size": batch,
        "limit": limit or run.eval.limit,
    }
    try:
        if spec.eval_kind == "lm":
            record.update(_evaluate_lm(loaded, spec, examples, batch, bar))
            if generate_lm:
                bar.reset()
                generated = _evaluate_generation(loaded, spec, examples, batch, decoding, bar)
                record["metrics"].update(generated.pop("metrics"))
                record.update({k: v for k, v in generated.items() if k != "n_examples"})
        else:
            record.update(_evaluate_generation(loaded, spec, examples, batch, decoding, bar))
    finally:
        bar.close()
    predictions = record.pop("predictions", None)
    if predictions is not None:
        atomic.write_text(Path(run_dir) / f"predictions-{result_name(split, checkpoint)}.jsonl", predictions)
    record["time_s"] = time.time() - started
    record["evaluated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    record["code"] = code_version()  # the evaluation's code
    record["trained_with"] = (status or {}).get("trained_with")  # the training's (status.json)
    atomic.write_json(out, record)
    _log_to_tracker(
        run, run_dir, result_name(split, checkpoint), record["metrics"], step, (status or {}).get("steps", 0)
    )
    return {"run": str(run_dir), "state": "evaluated", **record}


def validation_scores(loaded: LoadedRun, examples: list, limit: int | None) -> dict:
    """The dataset's metrics of the generations of a model being trained for the first ``limit`` unique
    prompts of the validation ``examples`` it loaded: the selection, decoding and scoring of
    :func:`evaluate_run`, nothing written (training's ``train.keep_best``; ELI5: answers to the titles)."""
    spec = get_spec(loaded.run.dataset.name)
    decoding: dict = {}
    examples = _scored_examples(loaded, spec, examples, limit, decoding)
    bar = ProgressLog(tqdm(total=len(examples), disable=True), "validation")
    return _evaluate_generation(loaded, spec, examples, loaded.run.eval.batch_size, decoding, bar)["metrics"]


def _scored_examples(loaded: LoadedRun, spec, examples: list, limit: int | None, decoding: dict) -> list:
    """One example per unique prompt, the first ``limit``; sets ``decoding``'s max_new_tokens from the
    whole split's references when neither the call nor the run sets it."""
    examples = eval_examples(spec, examples)
    if spec.eval_kind != "lm" and decoding.get("max_new_tokens") is None and loaded.run.eval.max_new_tokens is None:
        decoding["max_new_tokens"] = max_new_tokens_from_data(loaded.tokenizer, examples, spec.max_new_tokens)
    return examples[:limit] if limit else examples


def metrics_problem(path: Path, split: str) -> str | None:
    """Why ``path`` is not a complete metrics record of ``split`` (None when it is one)."""
    try:
        record = atomic.read_json(path)
    except (OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}".splitlines()[0]
    if not isinstance(record, dict) or record.get("split") != split or not isinstance(record.get("metrics"), dict):
        return f"no metrics of split {split!r}"
    if not all(isinstance(v, (int, float)) for v in record["metrics"].values()):
        return "a metric that is not a number"
    return None


class ProgressLog:
    """A tqdm bar (shown on a terminal) that also logs a line every PROGRESS_EVERY_S, so that an
    evaluation whose output goes to a file shows progress."""

    def __init__(self, bar, name: str):
        self.bar, self.name, self.last, self.done = bar, name, time.monotonic(), 0

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n  # counted here: a disabled bar (no terminal) counts nothing
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.last = time.monotonic()
            log.info("%s: %d/%d examples done", self.name, self.done, self.bar.total)

    def reset(self) -> None:
        self.bar.reset()
        self.done = 0

    def close(self) -> None:
        self.bar.close()


def max_new_tokens_from_data(tokenizer, examples, cap: int) -> int:
    """Enough new tokens for the split's longest reference (+25%, at least +8), at most ``cap``:
    a row that never stops then holds its batch for as long as the data needs, not a GPU-sized 256."""
    references = [r for e in examples for r in e.references] or [""]
    longest = max(len(ids) for ids in tokenize(tokenizer, references))
    return min(cap, longest + max(8, longest // 4))


def _evaluate_generation(loaded: LoadedRun, spec, examples, batch: int, overrides: dict, bar) -> dict:
    from rosa.evaluation.scoring import compute_metrics, postprocess

    run = loaded.run
    settings = {"num_beams": run.eval.num_beams, "max_new_tokens": run.eval.max_new_tokens}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    decoding = decoding_for(spec, **settings)
    if spec.eval_kind == "lm":  # ELI5 answers: continue the question title; no stop string, 128 tokens
        decoding["max_new_tokens"] = decoding["max_new_tokens"] or 128
        prompts = [e.meta.get("title", "") for e in examples]
        if not all(prompts):
            raise EvalError(f"{spec.name}: --generate needs the question title of every example")
    else:
        prompts = [e.prompt for e in examples]
    result = generate(
        loaded.model,
        loaded.tokenizer,
        prompts,
        batch_size=batch,
        autocast=loaded.precision["autocast"],
        shared_prefix=loaded.run.train.shared_prefix == "auto",
        progress=bar.update,
        **decoding,
    )
    predictions = [postprocess(spec.name, text) for text in result.texts]
    references = [e.references for e in examples]
    metrics = compute_metrics(spec.name, predictions, references)
    lines = [
        json.dumps(
            {"id": e.id, "prompt": p, "generated": g, "prediction": s, "references": e.references}, ensure_ascii=False
        )
        for e, p, g, s in zip(examples, prompts, result.texts, predictions)
    ]
    return {
        "metrics": metrics,
        "n_examples": len(examples),
        "decoding": decoding,
        "generated_tokens": result.new_tokens,
        "tokens_per_s": result.tokens_per_s,
        "predictions": "\n".join(lines) + "\n",
    }


@torch.no_grad()
def _evaluate_lm(loaded: LoadedRun, spec, examples, batch: int, bar) -> dict:
    from rosa.metrics.perplexity import lm_metrics
    from rosa.models.loss import batches_token_loss

    run, tokenizer, model = loaded.run, loaded.tokenizer, loaded.model
    features, _stats = build_train_features(examples, tokenizer, spec, run.dataset.max_length, "all")
    batches = (
        collate_batch(features[start : start + batch], tokenizer.pad_token_id)
        for start in range(0, len(features), batch)
    )
    loss_sum, count = batches_token_loss(model, batches, loaded.device, loaded.precision["autocast"])
    bar.update(len(examples))
    nll = loss_sum / max(count, 1)
    return {
        "metrics": lm_metrics(nll),
        "n_examples": len(examples),
        "n_blocks": len(features),
        "n_tokens": count,
        "block_size": spec.block_size,
    }


def _log_to_tracker(run, run_dir: Path, name: str, metrics: dict, step: int, last_step: int) -> None:
    """``eval/<name>/<metric>`` at ``step`` (the evaluated adapter's) in the run's tracker, which goes on
    from the run's last step."""
    tracker = open_tracker(run, run_dir, start=last_step)
    try:
        tracker.results(
            step,
            {
                f"eval/{name}/{metric}": value
                for metric, value in metrics.items()
                if isinstance(value, (int, float)) and math.isfinite(value)
            },
        )
    finally:
        tracker.close()


EVAL_FAILED = 4  # train.py's exit status when training succeeded but its evaluation did not


def evaluate_after_training(run, run_dir: Path) -> int:
    """``train.eval_at_end``: evaluate the finished run on ``eval.split`` and print the metrics: its
    final adapter, and its best one too with ``train.keep_best``; ``eval.lm_eval``: run those lm-eval
    tasks on it (the final adapter). An error is reported and gives exit status 4; the run itself stays
    ``done``."""
    status = 0
    if run.train.eval_at_end:
        for checkpoint in ("last", "best") if run.train.keep_best else ("last",):

            def ours(checkpoint=checkpoint) -> list[str]:
                result = evaluate_run(run_dir, split=run.eval.split, force=True, checkpoint=checkpoint)
                return [summary_line(f"run {run_dir}", result)]

            status = _after_training(run_dir, "evaluation", ours, retry=f" --checkpoint {checkpoint}") or status
    if run.eval.lm_eval:
        from rosa.evaluation import lm_eval

        def tasks() -> list[str]:
            checked = lm_eval.resolve_tasks(run.eval.lm_eval, key="eval.lm_eval")
            result = lm_eval.evaluate_run_tasks(run_dir, checked, limit=run.eval.lm_eval_limit, force=True)
            return lm_eval.summary_lines(f"run {run_dir}", result)

        status = _after_training(run_dir, "lm-eval", tasks, retry=f" --lm-eval {','.join(run.eval.lm_eval)}") or status
    return status


def _after_training(run_dir: Path, what: str, evaluate, retry: str) -> int:
    """Print ``evaluate()``'s lines, or its error in one line: 0, or EVAL_FAILED."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        lines = evaluate()
    except Exception as err:
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        print(
            f"run {run_dir}: trained, but {what} failed: {message} (retry with: python eval.py {run_dir}{retry})",
            file=sys.stderr,
        )
        return EVAL_FAILED
    print("\n".join(lines))
    return 0
