"""The CI guard of tests/conftest.py: under CI=true a skip for a missing dependency fails (at run time
and at collection, e.g. ``importorskip`` at module level); a ``not applicable:`` skip stays a skip;
without CI both stay skips."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TESTS = {
    "test_missing.py": "import pytest\n\ndef test_needs_a_package():\n    pytest.importorskip('no_such_package_here')\n",
    "test_module_level.py": "import pytest\npytest.importorskip('no_such_package_either')\n\ndef test_x():\n    pass\n",
    "test_other_machine.py": "import pytest\n\n@pytest.mark.skipif(True, reason='not applicable: needs a GPU')\n"
    "def test_gpu():\n    pass\n\ndef test_runs():\n    pass\n",
}


@pytest.mark.parametrize("ci", [True, False], ids=["CI=true", "local"])
def test_a_skip_for_a_missing_dependency_fails_only_under_ci(tmp_path, ci):
    for name, text in TESTS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(REPO), **({"CI": "true"} if ci else {}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    out = result.stdout
    if ci:
        assert result.returncode == 1, out
        assert "skipped under CI=true, where set-up must provide everything" in out
        assert "FAILED" in out and "test_missing.py::test_needs_a_package" in out
        assert "ERROR" in out and "test_module_level.py" in out  # the collection-time skip
        assert "SKIPPED" in out and "not applicable: needs a GPU" in out  # stays a skip
    else:
        assert result.returncode == 0, out
        assert "1 passed, 3 skipped" in out
