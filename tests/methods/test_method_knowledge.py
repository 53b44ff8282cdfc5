"""A method is its own module (or small package) plus its YAML: nothing else in the package names a
method or one of its config keys. The rest asks a method through its interface (``rosa.methods.base``:
``MethodConfig.run_name_parts``, ``Method.table_row``, ``quantized_base``, ``budget_unit``,
``trains_base_weights``, ``mergeable``, ``check_layers``, ``check_device``, the registry's aliases)."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from rosa.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[2] / "rosa"
# keys every method has, read generically by the package (the registry name; the layers to adapt,
# checked by Method.check_fits for every adapter method, validated by rosa.schema.TARGET_MODULES)
SHARED_KEYS = {"name", "target_modules"}
# keys whose word is also another key of the run config or a column of the results tables (a table's
# rank and density come from Method.table_row): a bare string of these is not a leak; ``fnmodel.<key>``
# in a string and ``<...>.fnmodel.<key>`` in code are, for every key
GENERIC_WORDS = {"config", "split", "alpha", "warmup_steps", "rank", "density", "budget", "dropout"}


def method_words() -> tuple[set[str], set[str]]:
    names = set(METHODS)  # the aliases ("rosa", "none") are also the package's name and YAML's null
    keys = {f.name for method in METHODS.values() for f in fields(method.config_class)} - SHARED_KEYS
    return names, keys


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def leaks(path: Path, names: set[str], keys: set[str], root: Path = PACKAGE.parent) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    words = names | (keys - GENERIC_WORDS)
    skip, found = docstrings(tree), []
    key_in_text = re.compile(r"\bfnmodel\.(" + "|".join(map(re.escape, sorted(keys))) + r")\b")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value in words or key_in_text.search(node.value):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in keys and "fnmodel" in ast.unparse(node.value):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_method_name_or_key_outside_the_methods():
    names, keys = method_words()
    assert {"lora", "rosa-robust", "fft"} <= names and {"rank", "density", "lora_lr", "peft_type"} <= keys
    found = [
        leak
        for path in sorted(PACKAGE.rglob("*.py"))
        if "methods" not in path.relative_to(PACKAGE).parts[:1]
        for leak in leaks(path, names, keys)
    ]
    assert not found, "method knowledge outside rosa/methods/:\n" + "\n".join(found)


def test_the_checker_sees_a_leak(tmp_path):
    names, keys = method_words()
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""docstring naming lora is fine"""\nx = "lora"\ny = run.fnmodel.rank\nz = f"fnmodel.density={d}"\n'
        'w = "lora_lr"\nv = "rank"\n'
    )
    found = sorted(line.split(": ", 1)[1] for line in leaks(sample, names, keys, root=tmp_path))
    assert found == sorted(["'lora'", "run.fnmodel.rank", "'fnmodel.density='", "'lora_lr'"])
