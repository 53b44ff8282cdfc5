"""A new method and a new dataset are two files each (issue 24): a method module plus its
conf/fnmodel YAML, a dataset module plus its conf/dataset YAML, nothing else edited. Shown on a copy
of the package: DoRA's module and YAML copied under a new name ("dora-copy"), ViGGO's likewise
("viggo_copy"), and train.py trains the new method on the new dataset there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import REPO

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def test_a_method_and_a_dataset_are_two_files_each(tmp_path):
    copy = tmp_path / "repo"
    for name in ("rosa", "conf"):
        shutil.copytree(REPO / name, copy / name, ignore=IGNORE)
    shutil.copy(REPO / "train.py", copy / "train.py")
    new_files = {
        "rosa/methods/dora_copy.py": re.sub(
            r'@register\("dora"', '@register("dora-copy"', (REPO / "rosa/methods/dora.py").read_text()
        ),
        "conf/fnmodel/dora-copy.yaml": re.sub(
            r"^name: dora$", "name: dora-copy", (REPO / "conf/fnmodel/dora.yaml").read_text(), flags=re.M
        ),
        "rosa/data/viggo_copy.py": re.sub(
            r'name="viggo"', 'name="viggo_copy"', (REPO / "rosa/data/viggo.py").read_text()
        ),
        "conf/dataset/viggo_copy.yaml": re.sub(
            r"^name: viggo$", "name: viggo_copy", (REPO / "conf/dataset/viggo.yaml").read_text(), flags=re.M
        ),
    }
    for path, text in new_files.items():
        assert text != (REPO / path.replace("_copy", "").replace("-copy", "")).read_text(), path  # renamed
        (copy / path).write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "model=tiny",
            "fnmodel=dora-copy",
            "dataset=viggo_copy",
            "train.max_steps=2",
            "train.eval_at_end=false",
            "train.sample_at_eval=false",
            "dataset.sample_rows.train=16",
            "dataset.sample_rows.validation=4",
            f"output.path={tmp_path / 'runs'}",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "runs" / "viggo_copy" / "dora-copy").iterdir()
    assert (run / "status.json").exists() and '"state": "done"' in (run / "status.json").read_text()
