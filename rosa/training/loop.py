"""The training loop: plain PyTorch, written out in one place (no Trainer, no Lightning).

One optimizer step = ``batch_size / micro_batch_size`` micro-batches whose summed token losses are
divided by the step's number of target tokens (``train.loss_norm: examples`` instead averages each
example's mean token loss: ``rosa/models/loss.py``), so gradient accumulation gives the same
gradient as one big batch. The data order is a seeded permutation per epoch, so the micro-batches of any step
are a function of (seed, step): resuming needs only the step counter.

The method talks to the loop through ``before_step`` / ``loss_term`` / ``before_optimizer_step`` /
``after_step`` (``rosa/methods/base.py`` documents each) and may ask for a rebuilt optimizer (new
parameters) or a restart (RoSA's restart after mask selection).

Every rank of a distributed job runs this same code; ``distributed.is_main()`` gates only the writes
(run folder, logs, checkpoints, status) and the final evaluation, and ``self.parallel`` (replicated,
or FSDP-sharded for full fine-tuning) supplies the few operations that differ.
"""
from __future__ import annotations

import logging
import math
import os
import random
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import IO

import numpy as np
import torch

from rosa import atomic
from rosa.config import RunConfig
from rosa.data import DataError, build_train_features, collate_batch, get_spec, load_examples
from rosa.methods import LoopRequest, StepContext, build_model, cast_trainable
from rosa.data.features import prompt_ids
from rosa.models import resolve_device, resolve_precision, set_threads
from rosa.models import shared_prefix
from rosa.provenance import code_version
from rosa.models.loss import example_mean_loss, token_loss_sum
from rosa.training import checkpoint as ckpt
from rosa import distributed
from rosa.training import preemption
from rosa.training.preflight import PreflightError, preflight
from rosa.training.optim import build_optimizer, lr_factor, rebuild_optimizer, set_learning_rates
from rosa.runs import (FINAL_RECORD, RunLocked, lock_run, read_status, recover_status, run_dir_for,
                                  update_status)

log = logging.getLogger("rosa")
PROGRESS_EVERY_S = 10.0


class TrainingFailed(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def weight_memory_gb(model: torch.nn.Module) -> float:
    from rosa.models.quantize import weight_bytes  # counts NF4 tensors at their real (4-bit) size
    return weight_bytes(model) / 2**30


# ----------------------------------------------------------------------------- data order
class Batches:
    """Deterministic micro-batches: a seeded permutation per epoch, sliced by step."""

    def __init__(self, features: list[dict], micro_batch_size: int, accumulation: int, seed: int, pad_id: int):
        self.features, self.micro, self.accum, self.seed, self.pad_id = features, micro_batch_size, accumulation, seed, pad_id
        self.micro_per_epoch = math.ceil(len(features) / micro_batch_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / accumulation)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return torch.randperm(len(self.features), generator=generator).tolist()

    def step(self, phase_step: int) -> list[dict[str, torch.Tensor]]:
        epoch, index = divmod(phase_step, self.steps_per_epoch)
        order = self.order(epoch)
        first = index * self.accum
        micro = range(first, min(first + self.accum, self.micro_per_epoch))
        return [collate_batch([self.features[i] for i in order[m * self.micro:(m + 1) * self.micro]], self.pad_id)
                for m in micro]


# ----------------------------------------------------------------------------- the run
class Trainer:
    """Builds everything a run needs, then ``fit()``s. Attributes are the run's live state."""

    def __init__(self, run: RunConfig, run_dir: Path):
        self.run, self.run_dir = run, run_dir
        self.device = distributed.local_device(resolve_device(run.device))
        self.precision = resolve_precision(run.precision, self.device)
        self.threads = set_threads(run.threads)
        t = run.train
        self.accumulation = t.batch_size // t.micro_batch_size

        seed_everything(run.seed)
        self.spec = get_spec(run.dataset.name)
        self.model, self.tokenizer, self.method = build_model(run, self.device, self.precision)
        self.weight_memory_gb = weight_memory_gb(self.model)
        self.parallel = distributed.strategy(self.method.trains_base_weights)
        self.model = self.parallel.wrap(self.model, self.device)

        self.shared_prefix = self.choose_shared_prefix()
        self.features, self.val_features = self.load_data()
        self.batches = Batches(self.features, t.micro_batch_size, self.accumulation, run.seed, self.tokenizer.pad_token_id)
        if self.shared_prefix == "auto":
            log.info("shared prefix (train.shared_prefix=auto): %s", self.describe_shared_prefix())
        self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.batches.steps_per_epoch

        self.optimizer = build_optimizer(self.method.param_groups(self.model, t), t)
        scaler_on = self.precision["autocast"] == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.step = self.phase_step = 0
        self.history: list[dict] = []      # per-step train losses (kept in checkpoints for tests/figures)
        self.val_history: list[dict] = []
        self.stop_signal: int | None = None
        self.last_good: Path | None = None  # the newest checkpoint known good (kept when the next is written)

    # -- setup helpers
    def cast_trainable(self) -> None:
        """Parameters a method added (new adapters, a rebuilt structure) into the training dtype."""
        if not self.parallel.sharded:  # sharded: cast before wrapping, FSDP owns the parameters after
            cast_trainable(self.model, self.precision["param_dtype"], self.device)

    def load_data(self):
        run, report_lines = self.run, []
        train_examples, report = load_examples(run.dataset, "train")
        report_lines.append(report.summary())
        val_examples, val_report = load_examples(run.dataset, "validation")
        report_lines.append(val_report.summary())
        features, stats = build_train_features(train_examples, self.tokenizer, self.spec, run.dataset.max_length, run.train.loss_on)
        val_features, val_stats = build_train_features(val_examples, self.tokenizer, self.spec, run.dataset.max_length, run.train.loss_on)
        for line in report_lines + [f"train features: {stats.summary()}", f"validation features: {val_stats.summary()}"]:
            log.info(line)
        if not features:
            raise TrainingFailed(f"dataset {run.dataset.name}: no training example survived tokenisation")
        self.val_examples = val_examples
        return features, val_features

    def choose_shared_prefix(self) -> str:
        """``train.shared_prefix``, or "off" (said in the log) when the model must take the plain path."""
        reason = shared_prefix.unsupported_reason(self.model)
        if self.parallel.sharded and distributed.is_distributed():  # FSDP reshards a block after its first
            # backward pass; the prefix's pass through the block would come second, after its weights are freed
            reason = "FSDP-sharded training runs each block's backward once per forward call"
        if self.run.train.shared_prefix == "auto" and reason is not None:
            log.info("shared prefix off: %s", reason)
            return "off"
        return self.run.train.shared_prefix

    def prefix_length(self, batch: dict[str, torch.Tensor]) -> int:
        """The leading tokens of ``batch`` computed once (0: the plain path)."""
        return shared_prefix.shared_prefix_length(batch) if self.shared_prefix == "auto" else 0

    def describe_shared_prefix(self) -> str:
        """The prefix lengths over the first epoch's training micro-batches, and the share of the
        positions they compute (padding included) that the shared path leaves out."""
        lengths, computed, saved = [], 0, 0
        for step in range(self.batches.steps_per_epoch):
            for batch in self.batches.step(step):
                length = self.prefix_length(batch)
                lengths.append(length)
                computed += batch["input_ids"].numel()
                saved += (len(batch["input_ids"]) - 1) * length
        shared = sorted(n for n in lengths if n)
        if not shared:
            return f"no micro-batch has a common prefix of {shared_prefix.MIN_SHARED_PREFIX}+ tokens: plain path"
        return (f"{len(shared)} of {len(lengths)} training micro-batches share a prefix of {shared[len(shared) // 2]} "
                f"tokens (median; {shared[0]}-{shared[-1]}), which leaves {100 * saved / computed:.0f}% of the "
                "positions (padding included) out of the computation")

    def context(self) -> StepContext:
        return StepContext(model=self.model, step=self.step, phase_step=self.phase_step,
                           epoch=self.phase_step // self.batches.steps_per_epoch,
                           steps_per_epoch=self.batches.steps_per_epoch, total_steps=self.total_steps,
                           micro_batches_per_step=self.accumulation, run_dir=self.run_dir)

    def autocast(self):
        dtype = self.precision["autocast"]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    # -- requests from the method
    def handle(self, request: LoopRequest | None) -> None:
        if request is None:
            return
        groups = self.method.param_groups(self.model, self.run.train)
        if request.restart:
            log.info("restart at step %d: fresh optimizer, schedule and data order (%s)", self.step, self.method.describe())
            seed_everything(self.run.seed)
            self.cast_trainable()
            self.optimizer = build_optimizer(groups, self.run.train)
            self.phase_step = 0
        elif request.rebuild_optimizer:
            self.cast_trainable()
            self.optimizer = rebuild_optimizer(self.optimizer, groups, self.run.train)

    # -- checkpoints
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The method's tensors (sharded: gathered in full on rank 0, a collective every rank calls)."""
        return self.parallel.model_state(self.model, self.method.state_dict(self.model))

    def save(self) -> None:
        tensors, optimizer = self.adapter_state(), self.parallel.optimizer_state(self.model, self.optimizer)
        if not distributed.is_main():  # rank 0 writes; every rank holds the same state
            return
        trainer_state = {"optimizer": optimizer, "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state()}
        state = {"step": self.step, "phase_step": self.phase_step, "method": self.method.extra_state(),
                 "history": self.history, "val_history": self.val_history}
        self.last_good = ckpt.save_checkpoint(self.run_dir, self.step, tensors, trainer_state, state, keep=self.last_good,
                                              write_once=self.method.write_once_keys(tensors))

    def resume(self) -> bool:
        """Continue from the newest checkpoint that loads (an unreadable newer one is named in a
        warning); CheckpointError when there are checkpoints but none loads."""
        found = ckpt.usable_checkpoint(self.run_dir, self.device)
        if found is None:
            return False
        path, (tensors, trainer_state, state) = found
        self.last_good = path
        self.method.load_extra_state(state["method"])
        self.parallel.load_model_state(self.model, tensors, self.method)
        self.cast_trainable()
        self.optimizer = build_optimizer(self.method.param_groups(self.model, self.run.train), self.run.train)
        self.parallel.load_optimizer_state(self.model, self.optimizer, trainer_state["optimizer"])
        self.scaler.load_state_dict(trainer_state["scaler"])
        ckpt.set_rng_state(trainer_state["rng"])
        self.step, self.phase_step = state["step"], state["phase_step"]
        self.history, self.val_history = state["history"], state["val_history"]
        log.info("resumed from %s (step %d, %s)", path, self.step, self.method.describe())
        return True

    # -- one optimizer step
    def train_step(self) -> dict:
        micro_batches = self.batches.step(self.phase_step)
        n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
        n_tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
        n_examples = sum(len(b["input_ids"]) for b in micro_batches)
        per_example = self.run.train.loss_norm == "examples"
        self.model.train()
        total = 0.0
        for batch, weight in self.parallel.share(micro_batches):  # all of them in one process
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast():
                prefix = self.prefix_length(batch)
                if per_example:  # already a mean: of the step's per-example mean losses
                    loss_sum, norm = example_mean_loss(self.model, batch, n_examples, prefix), 1
                else:
                    loss_sum, norm = token_loss_sum(self.model, batch, prefix_length=prefix)[0], max(n_targets, 1)
            loss = loss_sum * weight / norm
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        extra = self.method.loss_term(self.context())
        if extra is not None:  # each rank adds its share: the gradients are summed over ranks below
            extra = extra / distributed.world_size()
            self.scaler.scale(extra).backward()
            total += float(extra.detach())
        total = distributed.all_reduce_scalar(total)
        if not math.isfinite(total):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingFailed(f"loss is {total} at step {self.step + 1}; the last good checkpoint is kept")
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.parallel.reduce_grads(params)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.run.train.max_grad_norm or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.method.before_optimizer_step(self.context())
        lr_scale = lr_factor(self.phase_step, self.total_steps, self.run.train.warmup_steps, self.run.train.scheduler)
        set_learning_rates(self.optimizer, lr_scale)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": total, "grad_norm": grad_norm, "lr": self.optimizer.param_groups[0]["lr"], "tokens": n_tokens}

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        loss_sum, count = 0.0, 0
        limit = self.run.train.eval_batches
        micro = self.run.train.micro_batch_size
        for i, start in enumerate(range(0, len(self.val_features), micro)):
            if limit and i >= limit:
                break
            batch = collate_batch(self.val_features[start:start + micro], self.tokenizer.pad_token_id)
            with self.autocast():
                loss, n = token_loss_sum(self.model, {k: v.to(self.device) for k, v in batch.items()},
                                         prefix_length=self.prefix_length(batch))
            loss_sum, count = loss_sum + float(loss), count + n
        val_loss = loss_sum / max(count, 1)
        return {"loss": val_loss, "ppl": math.exp(min(val_loss, 50.0))}

    @torch.no_grad()
    def sample_text(self) -> str:
        """A short greedy continuation of the first validation prompt, for TensorBoard."""
        example = self.val_examples[0]
        prompt = example.prompt or example.target[:64]
        ids = torch.tensor(prompt_ids(self.tokenizer, [prompt]), device=self.device)  # BOS as in training
        self.model.eval()
        with self.autocast():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=48,
                                      do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        return prompt + " ->" + self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    # -- the loop
    def fit(self, writer) -> dict:
        t = self.run.train
        last_saved, last_line = self.step, 0.0
        while self.phase_step < self.total_steps:
            self.handle(self.method.before_step(self.context()))
            started = time.perf_counter()
            stats = self.train_step()
            elapsed = time.perf_counter() - started
            self.step += 1
            self.phase_step += 1
            self.handle(self.method.after_step(self.context()))
            tokens_per_s = stats["tokens"] / elapsed
            self.history.append({"step": self.step, "loss": stats["loss"], "seconds": elapsed})
            if self.step % t.log_every == 0:
                writer.add_scalar("train/loss", stats["loss"], self.step)
                writer.add_scalar("train/lr", stats["lr"], self.step)
                writer.add_scalar("train/grad_norm", stats["grad_norm"], self.step)
                writer.add_scalar("train/tokens_per_s", tokens_per_s, self.step)
                writer.add_scalar("train/step_time_s", elapsed, self.step)
                writer.add_scalar("train/peak_mem_gb", peak_memory_gb(self.device), self.step)
            # a progress line (console and train.log) at least every PROGRESS_EVERY_S: a run whose
            # output is redirected must not look dead at minutes per step
            if time.monotonic() - last_line >= PROGRESS_EVERY_S or self.phase_step in (1, self.total_steps):
                last_line = time.monotonic()
                log.info("step %d (%d/%d of this phase): loss %.4f, lr %.2e, grad norm %.3g, %.2f s/step, %.0f tokens/s",
                         self.step, self.phase_step, self.total_steps, stats["loss"], stats["lr"],
                         stats["grad_norm"], elapsed, tokens_per_s)
            if t.eval_every and self.step % t.eval_every == 0 and self.phase_step < self.total_steps:
                self.log_validation(writer)
            preemption.test_signal(self.step)
            self.stop_signal = distributed.agree_stop(self.stop_signal)
            if self.step % t.checkpoint_every == 0 or self.stop_signal is not None:
                self.save()
                last_saved = self.step
                if distributed.is_main():
                    update_status(self.run_dir, steps=self.step, total_steps=self.total_steps)
            if self.stop_signal is not None:
                raise InterruptedError(f"stopped by signal {preemption.describe(self.stop_signal)} at step {self.step}; "
                                       "checkpoint saved")
        final = self.log_validation(writer)
        if last_saved != self.step:
            self.save()
        return final

    def log_validation(self, writer) -> dict:
        metrics = self.validate()
        writer.add_scalar("val/loss", metrics["loss"], self.step)
        writer.add_scalar("val/ppl", metrics["ppl"], self.step)
        self.val_history.append({"step": self.step, **metrics})
        if self.run.train.sample_at_eval:
            writer.add_text("val/sample", self.sample_text(), self.step)
        log.info("step %d: val loss %.4f, ppl %.2f", self.step, metrics["loss"], metrics["ppl"])
        return metrics


# ----------------------------------------------------------------------------- entry
class _RunLogHandler(logging.FileHandler):
    """train.log. A line that cannot be written (a full disk) is dropped without the traceback
    ``logging`` would print for it: the console has the line, and the run's own error stays one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(run_dir: Path) -> logging.Handler:
    handler = _RunLogHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def flat_hparams(run: RunConfig) -> dict:
    def flatten(prefix, value, out):
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}{k}.", v, out)
        else:
            out[prefix[:-1]] = value if isinstance(value, (int, float, str, bool)) else str(value)
        return out
    return flatten("", asdict(run), {})


def train(run: RunConfig, config_yaml: str) -> int:
    """Train (or resume, or skip) the run this config names. Returns the process exit status.

    Every rank of a distributed job runs this; only rank 0 writes (folder, lock, logs, status,
    checkpoints, adapter) and evaluates."""
    from torch.utils.tensorboard import SummaryWriter

    distributed.init_from_env(resolve_device(run.device))
    main = distributed.is_main()
    run_dir = run_dir_for(run)
    status = recover_status(run_dir) if main else read_status(run_dir)
    if status and status.get("state") == "done":
        if main:
            print(f"run {run_dir} is already done ({status.get('steps')} steps, finished {status.get('ended')}); nothing to do")
        return 0
    try:  # device, model, method-vs-model, data and stored settings: before the run folder exists
        preflight(run, run_dir)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lock = _hold_run_folder(run_dir) if main else None
    if main and lock is None:
        return 2
    original_handlers = preemption.install_startup()  # until the loop runs, a stop signal ends start-up cleanly
    started = time.time()
    trainer = handler = None
    try:
        if main:
            handler = setup_logging(run_dir)
            atomic.write_text(run_dir / "config.yaml", config_yaml)
        trainer = Trainer(run, run_dir)
        resumed = trainer.resume()
        trainable = trainer.method.trainable_parameters(trainer.model)
        if main:
            if not resumed:
                _clean_tensorboard(run_dir)
            log.info("run %s: %s on %s (%s), %d trainable parameters, %d steps", run_dir, trainer.method.describe(),
                     run.dataset.name, trainer.precision["name"], trainable, trainer.total_steps)
            update_status(run_dir, state="running", error=None, pid=os.getpid(), method=run.fnmodel.name,
                          trained_with=_trained_with(status, trainer.step),
                          dataset=run.dataset.name, model=run.model.name, precision=trainer.precision["name"],
                          trainable_params=trainable, weight_memory_gb=trainer.weight_memory_gb,
                          total_steps=trainer.total_steps, threads=trainer.threads,
                          **({} if resumed else {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        preemption.install(trainer, original_handlers)
        writer = SummaryWriter(log_dir=str(run_dir), purge_step=trainer.step + 1 if resumed else None,
                               flush_secs=15) if main else distributed.NullWriter()
        final = trainer.fit(writer)
        train_time = (status or {}).get("train_time_s", 0) + time.time() - started
        summary = dict(state="done", ended=time.strftime("%Y-%m-%dT%H:%M:%S"), steps=trainer.step,
                       trainable_params=trainer.method.trainable_parameters(trainer.model),
                       final_val_loss=final["loss"], final_val_ppl=final["ppl"], train_time_s=train_time,
                       step_time_s=_mean([h["seconds"] for h in trainer.history if "seconds" in h]),
                       peak_mem_gb=peak_memory_gb(trainer.device))
        _save_adapter(trainer, summary)
        writer.add_hparams(flat_hparams(run), {"hparam/val_loss": final["loss"], "hparam/val_ppl": final["ppl"]}, run_name=".")
        writer.close()
        if not main:
            return 0
        update_status(run_dir, **summary)
        print(f"run {run_dir}: done in {trainer.step} steps, val loss {final['loss']:.4f}, val ppl {final['ppl']:.2f}")
        if not run.train.eval_at_end:
            return 0
    except (InterruptedError, preemption.StopRequested) as stop:
        if main:
            note = _record_status(run_dir, state="interrupted", error=str(stop))
            print(f"run {run_dir}: {stop}{note}", file=sys.stderr)
            signum = stop.signum if isinstance(stop, preemption.StopRequested) else trainer.stop_signal
            # under submitit: requeue now that the checkpoint is saved
            preemption.hand_over(signum, original_handlers, trainer.step if trainer else 0)
        return 3
    except (OSError, ckpt.CheckpointError, DataError) as err:  # a full disk, an unreadable checkpoint, data: one line
        message = _record_failure(run_dir, trainer, err) if main else f"{type(err).__name__}: {err}".splitlines()[0]
        print(f"error: run {run_dir} failed: {message}", file=sys.stderr)
        return 1
    except Exception as err:  # the run is marked failed with its error, then the error propagates
        if main:
            _record_failure(run_dir, trainer, err)
            log.error("run %s failed: %s", run_dir, err)
        raise
    finally:
        preemption.restore(original_handlers)
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if lock is not None:
            lock.close()  # releases the run
    trainer = None  # free the training model; the run is done whatever its evaluation gives
    from rosa.evaluation.runner import evaluate_after_training
    return evaluate_after_training(run, run_dir)


def _trained_with(status: dict | None, step: int) -> list[dict]:
    """The run's ``trained_with`` list (``rosa.provenance``): one entry per code version that trained
    it, with the step it took over at; a resume under other code (commit or dirty files) adds one."""
    entries = list((status or {}).get("trained_with") or [])
    version = code_version()
    if not entries or {k: entries[-1].get(k) for k in version} != version:
        entries.append({**version, "from_step": step})
    return entries


def _hold_run_folder(run_dir: Path) -> IO | None:
    """Create the run folder and lock it (returns the open lock file), or print one line and return None."""
    created = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return lock_run(run_dir)
    except RunLocked as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        print(f"error: cannot write the run folder {run_dir}: {err.strerror or err} ({err.filename or run_dir}); "
              "allowed: an output.path this process can write", file=sys.stderr)
    return None


def _save_adapter(trainer: Trainer, summary: dict) -> None:
    """``<run>/adapter`` with the final status record (written into ``adapter.tmp``, then renamed): a
    finished run is recognised from it even if status.json is lost. Every rank calls it (sharded
    state is gathered on rank 0); rank 0 writes."""
    tensors = trainer.adapter_state()
    if not distributed.is_main():
        return
    record = {**(read_status(trainer.run_dir) or {}), **summary}

    def write(folder: Path) -> None:
        trainer.method.save_adapter(trainer.model, folder, {"base_model": trainer.run.model.name}, tensors=tensors)
        atomic.write_json(folder / FINAL_RECORD.name, record)
    atomic.replace_dir(trainer.run_dir / "adapter", write, needed_bytes=atomic.tensor_bytes(tensors))


def _record_status(run_dir: Path, **fields) -> str:
    """update_status when the disk allows it (after a write error, it may not): never a second error.
    Returns "" or a note for the caller's one line saying that status.json could not be updated."""
    try:
        update_status(run_dir, **fields)
    except OSError as err:
        return f" (status.json not updated: {err.strerror or err})"
    return ""


def _record_failure(run_dir: Path, trainer: Trainer | None, err: BaseException) -> str:
    """Mark the run failed with the error's first line (returned, with a note if status.json could not
    be written). The steps done are kept: a run that could not resume (step 0) does not overwrite the
    count of its earlier attempt."""
    message = str(err) if isinstance(err, atomic.WriteError) else f"{type(err).__name__}: {err}".splitlines()[0]
    return message + _record_status(run_dir, state="failed", error=message, ended=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    **({"steps": trainer.step} if trainer and trainer.step else {}))


def _clean_tensorboard(run_dir: Path) -> None:
    """A run that starts from step 0 drops the events of an earlier attempt (killed before its first
    checkpoint), so TensorBoard shows no step twice; a resume purges the steps after its checkpoint."""
    stale = list(run_dir.glob("events.out.tfevents.*"))
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d TensorBoard event file(s) of an earlier attempt (the run starts from step 0)", len(stale))
