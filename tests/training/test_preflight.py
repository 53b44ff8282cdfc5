"""Checks that need the model, the data or the machine run before the run folder exists: bad input
stops with one line and exit status 2 and leaves no folder behind (``rosa/training/preflight.py``)."""

from __future__ import annotations

import pytest
import torch

from rosa.config import compose, validate
from rosa.runs import run_dir_for
from rosa.training.lifecycle import train
from rosa.training.loop import Trainer  # builds the run: every check runs before its folder exists
from tests.conftest import run_train

SMALL = ["dataset.sample_rows.train=8", "dataset.sample_rows.validation=4", "dataset.sample_rows.test=4"]


def refused(tmp_path, capsys, *overrides: str) -> str:
    """train() in-process: exit status 2, one line on stderr, no output folder."""
    runs = tmp_path / "runs"
    run = validate(compose([*SMALL, *overrides, f"output.path={runs}"]))
    assert train(run, "") == 2
    assert not runs.exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_missing_local_data_folder(tmp_path, capsys):
    message = refused(tmp_path, capsys, "dataset.source=local", "dataset.path=does/not/exist")
    assert "dataset.path: 'does/not/exist' is not a directory; expected one holding train (trainset.csv)" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "0 rows read"),  # an empty file
        (b"mr,text\nname[A],A.\n", "missing field 'ref'"),  # a column missing
        (b"mr,ref\nname[A],A \xe9.\n", "line 2 is not UTF-8"),  # a non-UTF-8 byte
    ],
)
def test_bad_data_file(tmp_path, capsys, content, expected):
    data = tmp_path / "e2e"
    data.mkdir()
    (data / "trainset.csv").write_bytes(content)
    message = refused(tmp_path, capsys, "dataset.source=local", f"dataset.path={data}")
    assert str(data / "trainset.csv") in message and expected in message


@pytest.mark.parametrize(
    "config_json, expected",
    [
        (None, "no such folder"),
        (b"{garbage", "is not valid JSON"),
        (b'{"model_type": "no-such-architecture"}', "its config cannot be read"),
    ],
)
@pytest.mark.parametrize("method", ["lora", "fft"])
def test_unreadable_model(tmp_path, capsys, config_json, expected, method):
    folder = tmp_path / "model"
    if config_json is not None:
        folder.mkdir()
        (folder / "config.json").write_bytes(config_json)
    assert expected in refused(tmp_path, capsys, f"model.name={folder}", f"fnmodel={method}")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["fnmodel.target_modules=[no_such_module]"],
            "fnmodel.target_modules=['no_such_module'] matches no linear layer of the model; allowed: 'all-linear', a list "
            "of names or a regex over module names (this model's: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj)",
        ),
        (["fnmodel.rank=100000"], "fnmodel.rank=100000 exceeds min(out, in) = 192 of layer"),
        (["fnmodel=rosa-robust", "fnmodel.rank=100000"], "fnmodel.rank=100000 exceeds min(out, in) = 192"),
        (
            ["fnmodel=rosa-orthogonal", "fnmodel.rank=100000"],
            "fnmodel.rank=100000 gives r=100000 for a 192x192 layer; allowed: 1 <= r <= min(out, in) = 192",
        ),
    ],
)
def test_method_must_fit_the_model(tmp_path, capsys, overrides, expected):
    assert expected in refused(tmp_path, capsys, *overrides)


def test_corrupt_mask_file(tmp_path, capsys):
    masks = tmp_path / "masks.safetensors"
    masks.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    # refused before the run folder exists (read and checked once, with the density), one line
    run = validate(
        compose([*SMALL, "fnmodel=rosa-robust", f"fnmodel.mask_path={masks}", f"output.path={tmp_path / 'runs'}"])
    )
    with pytest.raises(ValueError) as refusal:
        Trainer(run, tmp_path / "runs" / "run")
    message = str(refusal.value)
    assert f"fnmodel.mask_path='{masks}': {masks} is unreadable" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="not applicable: needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    message = refused(tmp_path, capsys, "device=cuda")
    assert message == (
        "error: device='cuda' is not available on this machine (no CUDA (torch.cuda.is_available() "
        "is false)); allowed: auto, cpu"
    )


def test_unfinished_run_with_other_settings_is_not_resumed(tmp_path, capsys):
    """A folder whose stored config.yaml trains differently (an older version's hash, an edit) is
    refused by name instead of resumed into a mixed run; the same settings pass."""
    runs = tmp_path / "runs"
    run = validate(compose([*SMALL, "output.name=fixed", f"output.path={runs}"]))
    folder = run_dir_for(run)
    folder.mkdir(parents=True)
    stored = compose([*SMALL, "output.name=fixed", f"output.path={runs}", "train.lr=1e-3", "fnmodel.rank=4"])
    from omegaconf import OmegaConf

    (folder / "config.yaml").write_text(OmegaConf.to_yaml(stored, resolve=True))
    from rosa.training.preflight import check_same_settings

    with pytest.raises(ValueError) as error:
        check_same_settings(run, folder)
    assert str(error.value) == (
        f"run folder {folder} holds an unfinished run with other training settings (fnmodel.rank=4 there, 8 now, "
        "train.lr=0.001 there, 0.0002 now); allowed: the same settings to resume it, or another output.name or "
        "output.path for a new run"
    )
    assert train(run, "") == 2 and not (folder / "status.json").exists()
    assert "fnmodel.rank=4 there, 8 now" in capsys.readouterr().err
    (folder / "config.yaml").write_text(
        OmegaConf.to_yaml(compose([*SMALL, "output.name=fixed", f"output.path={runs}"]), resolve=True)
    )
    check_same_settings(run, folder)  # the same settings: resumes


def test_preflight_error_in_a_subprocess(tmp_path):
    """The command line as a user types it: one line, exit status 2, no run folder."""
    result = run_train("fnmodel.target_modules=[no_such_module]", f"output.path={tmp_path / 'runs'}", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: fnmodel.target_modules=['no_such_module'] matches")
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_mask_file_must_fit_the_target_layers(tmp_path):
    """Masks saved for the same layers pass; masks for other layers are refused by name."""
    from rosa.methods.base import find_target_modules
    from rosa.methods.rosa_robust.masks import random_masks, save_masks
    from rosa.models.tiny import tiny_model, tiny_tokenizer

    run = validate(compose([*SMALL, "fnmodel=rosa-robust", f"output.path={tmp_path / 'runs'}"]))
    model = tiny_model(tiny_tokenizer())
    layers = {name: model.get_submodule(name) for name in find_target_modules(model, run.fnmodel.target_modules)}
    save_masks(tmp_path / "masks.safetensors", random_masks(layers, 0.01, seed=0))
    run.fnmodel.mask_path, run.fnmodel.density = str(tmp_path / "masks.safetensors"), None  # the file's density
    Trainer(run, tmp_path / "runs" / "x")
    run.fnmodel.target_modules = ["q_proj"]
    with pytest.raises(ValueError, match="does not fit the target layers: missing \\[\\], unexpected"):
        Trainer(run, tmp_path / "runs" / "x")
    assert not (tmp_path / "runs").exists()
