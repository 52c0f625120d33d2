"""The two environments and the drift worker's contract between them.

The stack (.venv) is on numpy 2 with Feast; alibi-detect 0.13 pins numpy<2 and lives in .venv-drift,
where include/loopline/monitoring/drift_worker.py runs by file path (ARCHITECTURE.md, "Two Python environments").
These tests run the real worker in the real .venv-drift: npz in, JSON out, nothing else crosses.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loopline.core.settings import PROJECT_ROOT, get_settings
from loopline.monitoring import detection

WORKER = PROJECT_ROOT / "include" / "loopline" / "monitoring" / "drift_worker.py"
DRIFT_PYTHON = PROJECT_ROOT / ".venv-drift" / "bin" / "python"


def _drift(code: str) -> str:
    done = subprocess.run([str(DRIFT_PYTHON), "-I", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


# --- the guard: which environment has what -------------------------------------------------------


def test_the_stack_is_on_numpy_2_and_cannot_import_alibi_detect():
    assert int(np.__version__.split(".")[0]) >= 2, np.__version__
    assert importlib.util.find_spec("alibi_detect") is None, "alibi-detect must not be in .venv (it pins numpy<2)"
    assert importlib.util.find_spec("feast") is not None


def test_the_drift_environment_imports_alibi_detect_on_numpy_1_without_loopline():
    assert DRIFT_PYTHON.is_file(), "make .venv-drift/.loopline-installed"
    out = json.loads(
        _drift(
            "import json, importlib.util, numpy, alibi_detect, alibi_detect.cd, alibi_detect.saving;"
            "print(json.dumps([numpy.__version__, alibi_detect.__version__,"
            " importlib.util.find_spec('loopline') is None]))"
        )
    )
    assert out[0].startswith("1.") and out[1] == "0.13.0" and out[2] is True


def test_the_worker_imports_only_the_standard_library_numpy_and_alibi_detect():
    tree = ast.parse(WORKER.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"numpy", "alibi_detect"}


def test_the_drift_python_setting_defaults_to_the_repo_venv_and_is_exported(monkeypatch, tmp_path):
    monkeypatch.delenv("LOOPLINE_DRIFT_PYTHON", raising=False)
    get_settings.cache_clear()
    try:
        assert get_settings().drift_python == DRIFT_PYTHON
        assert get_settings().as_env()["LOOPLINE_DRIFT_PYTHON"] == str(DRIFT_PYTHON)
        assert detection.drift_python() == DRIFT_PYTHON
        monkeypatch.setenv("LOOPLINE_DRIFT_PYTHON", str(tmp_path / "py"))
        get_settings.cache_clear()
        assert detection.drift_python() == tmp_path / "py"
        assert "LOOPLINE_DRIFT_PYTHON" not in get_settings().container_env({})[0]  # a host path: not for images
        assert all(path != tmp_path / "py" for path, _ in get_settings().local_paths())
    finally:
        get_settings.cache_clear()
    assert "LOOPLINE_DRIFT_PYTHON=" in (PROJECT_ROOT / ".env.example").read_text()


def test_the_drift_python_setting_keeps_the_venv_symlink(monkeypatch):
    """Resolved, .venv-drift/bin/python would be the base interpreter: no alibi-detect (the image's ENV,
    `eval "$(loopline env)"` and apply_library_env all set the variable, so this path is the common one)."""
    assert DRIFT_PYTHON.is_symlink()
    monkeypatch.setenv("LOOPLINE_DRIFT_PYTHON", str(DRIFT_PYTHON))
    get_settings.cache_clear()
    try:
        assert get_settings().drift_python == DRIFT_PYTHON != DRIFT_PYTHON.resolve()
    finally:
        get_settings.cache_clear()


# --- the worker's JSON contract ------------------------------------------------------------------


def _matrices(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def window(rows: int, shift: float) -> np.ndarray:
        numeric = rng.normal(shift, 1, (rows, 2))
        codes = rng.choice(3, size=(rows, 1), p=[0.5, 0.3, 0.2]).astype("float64")
        return np.hstack([numeric, codes])

    return window(2_000, 0.0), window(1_000, 0.0), window(1_000, 0.5)


def _request(folder: Path, x_ref, x_curs, **overrides) -> Path:
    request = {
        "protocol": 1,
        "detector_dir": str(folder / "detector"),
        "p_val": 0.05,
        "categories_per_feature": {"2": [0, 1, 2]},
        "windows": len(x_curs),
        **overrides,
    }
    path = folder / "request.npz"
    np.savez(
        path, request=np.array(json.dumps(request)), x_ref=x_ref, **{f"x_cur_{i}": w for i, w in enumerate(x_curs)}
    )
    return path


def _run(request: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DRIFT_PYTHON), "-I", str(WORKER), str(request), str(out)], capture_output=True, text=True, timeout=300
    )


def test_the_worker_answers_json_per_window_and_saves_the_detector_in_alibi_format(tmp_path):
    x_ref, stable, shifted = _matrices()
    done = _run(_request(tmp_path, x_ref, [stable, shifted]), tmp_path / "out.json")
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads((tmp_path / "out.json").read_text())
    assert set(answer) == {"protocol", "fitted", "stale_reason", "windows", "versions", "seconds"}
    assert answer["protocol"] == 1 and answer["fitted"] is True and answer["stale_reason"] is None
    assert answer["versions"] == {"numpy": answer["versions"]["numpy"], "alibi_detect": "0.13.0"}
    assert len(answer["windows"]) == 2
    for window in answer["windows"]:
        assert set(window) == {"is_drift", "p_val", "distance", "threshold"}
        assert len(window["p_val"]) == len(window["distance"]) == 3
        assert all(isinstance(p, float) and 0 <= p <= 1 for p in window["p_val"])
    calm, moved = answer["windows"]
    assert calm["is_drift"] == 0 and calm["threshold"] is None  # no drift: no single FDR threshold
    assert moved["is_drift"] == 1 and 0 < moved["threshold"] <= 0.05
    assert moved["p_val"][0] < 1e-6 and moved["p_val"][1] < 1e-6  # both numeric columns moved 0.5 SD
    assert (tmp_path / "detector" / "config.toml").is_file()
    loaded = _drift(
        "from alibi_detect.saving import load_detector;"
        f"d = load_detector({str(tmp_path / 'detector')!r}); print(type(d).__name__, d.x_ref.shape, d.p_val)"
    )
    assert loaded == "TabularDrift (2000, 3) 0.05"  # today's alibi format: folders saved before the switch load
    again = _run(_request(tmp_path, x_ref, []), tmp_path / "again.json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again.json").read_text())["fitted"] is False


@pytest.mark.parametrize(
    ("overrides", "drop", "message"),
    [
        ({"protocol": 99}, None, "speaks protocol 99, this worker 1"),
        ({"windows": 2}, None, "lacks the windows ['x_cur_1']"),
        ({}, "p_val", "lacks 'p_val'"),
    ],
)
def test_a_bad_request_exits_2_with_one_line_naming_the_problem(tmp_path, overrides, drop, message):
    x_ref, stable, _ = _matrices()
    path = _request(tmp_path, x_ref, [stable], **overrides)
    if drop:
        with np.load(path) as npz:
            arrays = dict(npz)
        request = json.loads(str(arrays["request"]))
        del request[drop]
        np.savez(path, **{**arrays, "request": np.array(json.dumps(request))})
    done = _run(path, tmp_path / "out.json")
    assert done.returncode == 2 and not (tmp_path / "out.json").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drift worker: ") and message in lines[0], done.stderr


def test_mismatched_columns_are_refused_before_anything_is_fitted(tmp_path):
    x_ref, stable, _ = _matrices()
    done = _run(_request(tmp_path, x_ref, [stable[:, :2]]), tmp_path / "out.json")
    assert done.returncode == 2 and "x_cur_0 has shape (1000, 2); x_ref has 3 columns" in done.stderr
    assert not (tmp_path / "detector").exists()
