"""What each tracker logged, read back: TensorBoard's events (the reference: every run writes them),
an MLflow store's metric histories, W&B's offline files (with rosa's reader of W&B's record format);
and one tiny run per tracker (4 LoRA steps on the built-in ViGGO sample, validation every 2 steps,
the test split evaluated at the end), trained once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import run_train

OVERRIDES = (
    "dataset=viggo",
    "train.max_steps=4",
    "train.eval_every=2",
    "train.batch_size=4",
    "train.micro_batch_size=4",
    "dataset.sample_rows.train=16",
    "dataset.sample_rows.validation=4",
    "dataset.sample_rows.test=2",
    "eval.max_new_tokens=8",
)
STEPS = [1, 2, 3, 4]
_CACHE: dict[str, Path] = {}


def tracked_run(tmp_path_factory, tracker: str) -> Path:
    """The run folder of the session's run with ``tracker=<tracker>`` (its output.path is its parent's parents)."""
    if tracker not in _CACHE:
        root = tmp_path_factory.mktemp(f"tracked-{tracker}") / "runs"
        result = run_train(*OVERRIDES, f"tracker={tracker}", f"output.path={root}", env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        (config,) = root.glob("*/*/*/config.yaml")  # <dataset>/<method>/<run>
        _CACHE[tracker] = config.parent
    return _CACHE[tracker]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the run's event files: ``{tag: {step: value}}``."""
    acc = _events(run_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def tensorboard_texts(run_dir: Path, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in _events(run_dir).Tensors(f"{tag}/text_summary")}


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def as_float32(value: float) -> float:
    """A value as TensorBoard stores it (float32), to compare another tracker's float64 with it."""
    return float(np.float32(value))


def mlflow_client(store):
    from mlflow.tracking import MlflowClient

    from rosa.tracking.mlflow_store import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(str(store)))


def mlflow_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every (step, value) MLflow holds for ``key``, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def wandb_items(updates) -> dict:
    """W&B's key/value items (history, summary or config updates) as one dict (nested keys nested)."""
    out: dict = {}
    for item in updates:
        *parents, leaf = [item.key] if item.key else list(item.nested_key)
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = json.loads(item.value_json)
    return out


def wandb_history(paths) -> dict[str, dict[int, object]]:
    """The W&B history of these files: ``{key: {step: value}}`` (W&B's own keys, ``_step`` and the like,
    left out); a step logged twice for a key fails."""
    from rosa.tracking.wandb_offline import read_records

    out: dict[str, dict[int, object]] = {}
    for path in paths:
        for record in read_records(path, "history"):
            for key, value in wandb_items(record.history.item).items():
                if not key.startswith("_"):
                    assert record.history.step.num not in out.get(key, {}), (key, record.history.step.num)
                    out.setdefault(key, {})[record.history.step.num] = value
    return out


def wandb_summary(paths) -> dict:
    """The run's summary after every update of these files, in order."""
    from rosa.tracking.wandb_offline import read_records

    out: dict = {}
    for path in paths:
        for record in read_records(path, "summary"):
            out.update(wandb_items(record.summary.update))
    return out
