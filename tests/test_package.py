"""rosa/__init__.py silences two lines of dependency noise; a tiny run's stderr must not show them."""

from tests.conftest import run_train


def test_tiny_run_stderr_has_no_dependency_noise(tmp_path):
    result = run_train(
        "train.max_steps=2",
        "train.eval_at_end=false",
        "train.sample_at_eval=false",
        "threads=1",
        "dataset.sample_rows.train=16",
        "dataset.sample_rows.validation=4",
        "dataset.sample_rows.test=4",
        f"output.path={tmp_path / 'runs'}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for noise in ("_C_mxfp8", "Failed to load", "register_constant"):
        assert noise not in result.stderr, noise
