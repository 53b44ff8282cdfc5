"""The training loop: plain PyTorch, written out in one place (no framework).

One optimizer step = ``batch_size / micro_batch_size`` micro-batches whose summed token losses are
divided by the step's number of target tokens (``train.loss_norm: examples`` instead averages each
example's mean token loss: ``rosa/models/loss.py``), so gradient accumulation gives the same
gradient as one big batch. The data order is a seeded permutation per epoch, so the micro-batches of any step
are a function of (seed, step) (``rosa/data/batches.py``): resuming needs only the step counter.

The method talks to the loop through ``before_step`` / ``loss_term`` / ``before_optimizer_step`` /
``after_step`` (``rosa/methods/base.py`` documents each) and may ask for a rebuilt optimizer (new
parameters) or a restart (RoSA's restart after mask selection).

Every rank of a distributed job runs this same code; ``self.parallel`` (replicated, or FSDP-sharded
for full fine-tuning) supplies the few operations that differ, and only rank 0 writes checkpoints.
The run folder around the loop (lock, logs, status, exit statuses) is ``rosa/training/lifecycle.py``;
the numbers go to a tracker (``rosa/tracking``). The best adapter (``train.keep_best``) and
early stopping (``train.early_stop``) are decided at each validation (``rosa/training/selection.py``).
"""

from __future__ import annotations

import logging
import math
import random
import resource
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from rosa import atomic, distributed
from rosa.config import RunConfig
from rosa.data import DataError, build_train_features, get_spec, load_examples
from rosa.data.batches import Batches
from rosa.data.features import collate_batch, prompt_ids
from rosa.methods import LoopRequest, StepContext, build_model, cast_trainable
from rosa.metrics.perplexity import LM_METRICS, lm_metrics
from rosa.models import resolve_device, resolve_precision, set_threads, shared_prefix
from rosa.models.loss import batches_token_loss, example_mean_loss, token_loss_sum
from rosa.runs import BEST_ADAPTER, BEST_RECORD, update_status
from rosa.tracking import Tracker
from rosa.training import checkpoint as ckpt
from rosa.training import preemption
from rosa.training.optim import build_optimizer, lr_factor, rebuild_optimizer, set_learning_rates
from rosa.training.selection import VAL_LOSS, Selection

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
        self.batches = Batches(
            self.features, t.micro_batch_size, self.accumulation, run.seed, self.tokenizer.pad_token_id
        )
        if self.shared_prefix == "auto":
            log.info("shared prefix (train.shared_prefix=auto): %s", self.describe_shared_prefix())
        self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.batches.steps_per_epoch
        self.eval_every = self.batches.steps_per_epoch if t.eval_every == "epoch" else t.eval_every
        self.selection = Selection.for_run(t)  # the best adapter and early stopping (None: neither)

        self.optimizer = build_optimizer(self.method.param_groups(self.model, t), t)
        scaler_on = self.precision["autocast"] == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaler_on)
        self.step = self.phase_step = 0
        self.history: list[dict] = []  # per-step train losses (kept in checkpoints for tests/figures)
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
        if run.train.eval_at_end:  # the split scored at the end must load too, before the run folder exists
            load_examples(run.dataset, run.eval.split)
        if run.eval.lm_eval:  # and the lm-eval tasks run at the end must exist (local ones: their files)
            from rosa.evaluation.lm_eval import resolve_tasks

            resolve_tasks(run.eval.lm_eval, key="eval.lm_eval")
        features, stats = build_train_features(
            train_examples, self.tokenizer, self.spec, run.dataset.max_length, run.train.loss_on
        )
        val_features, val_stats = build_train_features(
            val_examples, self.tokenizer, self.spec, run.dataset.max_length, run.train.loss_on
        )
        for line in report_lines + [
            f"train features: {stats.summary()}",
            f"validation features: {val_stats.summary()}",
        ]:
            log.info(line)
        if not features:
            raise DataError(f"dataset {run.dataset.name}: no training example survived tokenisation")
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
        return (
            f"{len(shared)} of {len(lengths)} training micro-batches share a prefix of {shared[len(shared) // 2]} "
            f"tokens (median; {shared[0]}-{shared[-1]}), which leaves {100 * saved / computed:.0f}% of the "
            "positions (padding included) out of the computation"
        )

    def context(self) -> StepContext:
        return StepContext(
            model=self.model,
            step=self.step,
            phase_step=self.phase_step,
            epoch=self.phase_step // self.batches.steps_per_epoch,
            steps_per_epoch=self.batches.steps_per_epoch,
            total_steps=self.total_steps,
            micro_batches_per_step=self.accumulation,
            run_dir=self.run_dir,
        )

    def autocast(self):
        dtype = self.precision["autocast"]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    # -- requests from the method
    def handle(self, request: LoopRequest | None) -> None:
        if request is None:
            return
        groups = self.method.param_groups(self.model, self.run.train)
        if request.restart:
            log.info(
                "restart at step %d: fresh optimizer, schedule and data order (%s)", self.step, self.method.describe()
            )
            seed_everything(self.run.seed)
            self.cast_trainable()
            self.optimizer = build_optimizer(groups, self.run.train)
            self.phase_step = 0
            if self.selection is not None:  # the run starts over: a best of before the restart does not count
                self.selection.reset()
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
        state = {
            "step": self.step,
            "phase_step": self.phase_step,
            "method": self.method.extra_state(),
            "history": self.history,
            "val_history": self.val_history,
            **({"best_so_far": self.selection.state()} if self.selection is not None else {}),
        }
        keep = self.last_good
        if keep is not None and keep.name == ckpt.checkpoint_name(self.step):
            # this step again (its final validation gave a new best): keep the good checkpoint before it
            keep = next((p for p in ckpt.checkpoints(self.run_dir) if p != keep), None)
        self.last_good = ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            tensors,
            trainer_state,
            state,
            keep=keep,
            write_once=self.method.write_once_keys(tensors),
        )

    def write_adapter(self, directory: Path, record_file: str, record: dict) -> None:
        """``directory`` (``<run>/adapter``, ``<run>/best``): the adapter as the method saves it, with
        ``record`` in ``record_file`` beside it, written into ``<directory>.tmp`` and renamed. Every
        rank calls it (sharded state is gathered on rank 0); rank 0 writes."""
        tensors = self.adapter_state()
        if not distributed.is_main():
            return

        def write(folder: Path) -> None:
            self.method.save_adapter(self.model, folder, {"base_model": self.run.model.name}, tensors=tensors)
            atomic.write_json(folder / record_file, record)

        atomic.replace_dir(directory, write, needed_bytes=atomic.tensor_bytes(tensors))

    def save_best(self) -> None:
        """``<run>/best``: the adapter of this step, the selection's new best (its checkpoint is saved)."""
        self.write_adapter(self.run_dir / BEST_ADAPTER, BEST_RECORD.name, self.selection.record())

    def restore_best(self) -> None:
        """After a resume, ``<run>/best`` as the checkpoint says (rosa/training/selection.py): written
        again when the checkpoint is of the best step itself (a kill may have come before its write)."""
        best = self.selection
        if best is None or not best.keep_best or best.best_step is None:
            return
        if best.best_step == self.step:
            self.save_best()
            return
        path = self.run_dir / BEST_RECORD
        try:
            found = atomic.read_json(path)
        except (OSError, ValueError):
            found = None
        if distributed.is_main() and (found or {}).get("best_step") != best.best_step:
            log.warning(  # only after a fallback to the previous checkpoint: the newest one was unreadable
                "warning: %s is not of step %d, the checkpoint's best; the replayed steps write it again",
                path if found else self.run_dir / BEST_ADAPTER,
                best.best_step,
            )

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
        if self.selection is not None:
            self.selection.load_state(state.get("best_so_far"))
            self.restore_best()
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

    def validation_loss(self) -> dict:
        """The mean token loss (and perplexity) of the first ``train.eval_batches`` validation batches."""
        self.model.eval()
        micro, limit = self.run.train.micro_batch_size, self.run.train.eval_batches
        starts = list(range(0, len(self.val_features), micro))[: limit or None]
        batches = (collate_batch(self.val_features[s : s + micro], self.tokenizer.pad_token_id) for s in starts)
        loss_sum, count = batches_token_loss(
            self.model, batches, self.device, self.precision["autocast"], self.prefix_length
        )
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
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=48,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return prompt + " ->" + self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    # -- the loop
    def fit(self, tracker: Tracker) -> dict:
        t = self.run.train
        last_saved, last_line = self.step, 0.0
        while self.phase_step < self.total_steps and not self.stopped_early:
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
                tracker.scalars(
                    self.step,
                    {
                        "train/loss": stats["loss"],
                        "train/lr": stats["lr"],
                        "train/grad_norm": stats["grad_norm"],
                        "train/tokens_per_s": tokens_per_s,
                        "train/step_time_s": elapsed,
                        "train/peak_mem_gb": peak_memory_gb(self.device),
                    },
                )
            # a progress line (console and train.log) at least every PROGRESS_EVERY_S: a run whose
            # output is redirected must not look dead at minutes per step
            if time.monotonic() - last_line >= PROGRESS_EVERY_S or self.phase_step in (1, self.total_steps):
                last_line = time.monotonic()
                log.info(
                    "step %d (%d/%d of this phase): loss %.4f, lr %.2e, grad norm %.3g, %.2f s/step, %.0f tokens/s",
                    self.step,
                    self.phase_step,
                    self.total_steps,
                    stats["loss"],
                    stats["lr"],
                    stats["grad_norm"],
                    elapsed,
                    tokens_per_s,
                )
            new_best = False
            if self.eval_every and self.step % self.eval_every == 0 and self.phase_step < self.total_steps:
                new_best = self.validate(tracker)[1]
            self.stop_signal = distributed.agree_stop(self.stop_signal)
            # a new best is saved at once: the checkpoint that records it, then <run>/best (selection.py)
            if new_best or self.stopped_early or self.step % t.checkpoint_every == 0 or self.stop_signal is not None:
                self.save()
                last_saved = self.step
                if distributed.is_main():
                    update_status(self.run_dir, steps=self.step, total_steps=self.total_steps, **self.best_status())
                if new_best:
                    self.save_best()
            if self.stop_signal is not None:
                raise InterruptedError(
                    f"stopped by signal {preemption.describe(self.stop_signal)} at step {self.step}; checkpoint saved"
                )
        if self.val_history and self.val_history[-1]["step"] == self.step:
            # validated at this step already: an early stop, or a resume from the checkpoint that the
            # final validation's new best saved
            return {k: v for k, v in self.val_history[-1].items() if k != "step"}
        final, new_best = self.validate(tracker, can_stop=False)
        if last_saved != self.step or new_best:
            self.save()
        if new_best:
            self.save_best()
        return final

    @property
    def stopped_early(self) -> bool:
        return self.selection is not None and self.selection.stopped is not None

    def best_status(self) -> dict:
        """status.json's fields of the selection: the best so far, and the early stop once there is one."""
        if self.selection is None:
            return {}
        stopped = {"stopped_early": self.selection.stopped} if self.selection.stopped else {}
        return {**{k: v for k, v in self.selection.record().items() if k != "best_is"}, **stopped}

    def validate(self, tracker: Tracker, can_stop: bool = True) -> tuple[dict, bool]:
        """A validation (``log_validation``) counted by the selection: (its metrics, whether it is a new
        best to keep in ``<run>/best``). ``can_stop``: false at the last step."""
        metrics = self.log_validation(tracker)
        if self.selection is None:
            return metrics, False
        new_best = self.selection.observe(self.step, self.selection.value(metrics, self.spec), can_stop)
        if self.selection.stopped is not None:
            log.info("early stop at step %d of %d: %s", self.step, self.total_steps, self.selection.stopped["reason"])
        return metrics, new_best and self.selection.keep_best

    def log_validation(self, tracker: Tracker) -> dict:
        metrics = self.validation_loss()
        watched = self.selection.metric if self.selection is not None else VAL_LOSS
        if watched in LM_METRICS:  # a language-modelling dataset: its perplexities are the validation loss's
            metrics = {**lm_metrics(metrics["loss"]), **metrics}
        elif watched != VAL_LOSS:
            metrics.update(self.validation_scores())
        shown = "" if watched == VAL_LOSS else f", {watched} {self.selection.value(metrics, self.spec):.4g}"
        tracker.scalars(self.step, {f"val/{name}": value for name, value in metrics.items()})
        self.val_history.append({"step": self.step, **metrics})
        if self.run.train.sample_at_eval:
            tracker.text("val/sample", self.sample_text(), self.step)
        log.info("step %d: val loss %.4f, ppl %.2f%s", self.step, metrics["loss"], metrics["ppl"], shown)
        return metrics

    def validation_scores(self) -> dict:
        """The dataset's metrics of generations for the first ``train.eval_limit`` unique validation
        prompts, as eval.py scores them, under their own RNG state: generating must not change the
        training that follows."""
        from rosa.evaluation.load import LoadedRun
        from rosa.evaluation.runner import validation_scores

        loaded = LoadedRun(
            self.run, self.model, self.tokenizer, self.method, self.device, self.precision, False, "training"
        )
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return validation_scores(loaded, self.val_examples, self.run.train.eval_limit)
