"""The drift check's alibi-detect call in-process vs through a subprocess into its own venv (design A).

    python bench/spikes/drift_call.py --drift-python .venv-drift/bin/python [--rows 5000 --cols 20 --rounds 7]

Generates a reference and a live window (numeric + categorical columns, a shift in three of them),
then per round: (1) in-process TabularDrift fit + predict, if alibi-detect imports in this Python (today's
numpy-1 stack); (2) the same matrices through the real worker,
``include/loopline/monitoring/drift_worker.py``, in ``--drift-python``: npz written, a fresh process
started, a detector fitted into a fresh folder and saved, the window predicted, JSON read back: the
whole cost a task pays on a champion's first check (later checks load the saved detector instead).
Also the cold import of ``alibi_detect.cd`` in a fresh process of each Python. Checks both give the same p-values.
Prints medians as JSON. Stdlib + numpy only; nothing from the network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve().parents[2] / "include" / "loopline" / "monitoring" / "drift_worker.py"


def matrices(rows: int, cols: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
    rng = np.random.default_rng(seed)
    n_cat = cols // 4
    n_num = cols - n_cat

    def window(shift: bool) -> np.ndarray:
        num = rng.normal(0, 1, (rows, n_num))
        if shift:
            num[:, :3] += 0.15  # three numeric columns move 0.15 SD
        cat = rng.choice(5, size=(rows, n_cat), p=[0.4, 0.3, 0.15, 0.1, 0.05]).astype("float64")
        return np.hstack([num, cat])

    cats = {n_num + i: list(range(5)) for i in range(n_cat)}
    return window(False), window(True), cats


def cold_import_s(python: str, after: str = "pass") -> float:
    """Seconds to import alibi_detect.cd in a fresh process, after ``after`` (what the task has loaded anyway)."""
    code = f"{after};import time;t=time.perf_counter();import alibi_detect.cd;print(time.perf_counter()-t)"
    return float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def inprocess(x_ref, x_cur, cats, p_val) -> tuple[float, list[float]]:
    from alibi_detect.cd import TabularDrift

    t = time.perf_counter()
    det = TabularDrift(x_ref, p_val=p_val, categories_per_feature=cats, correction="fdr")
    pred = det.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    return time.perf_counter() - t, [float(p) for p in pred["p_val"]]


def via_worker(python: str, x_ref, x_cur, cats, p_val, folder: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    job, out, detector = folder / "job.npz", folder / "out.json", folder / f"detector-{time.monotonic_ns()}"
    request = {"protocol": 1, "detector_dir": str(detector), "p_val": p_val, "windows": 1,
               "categories_per_feature": {str(k): v for k, v in cats.items()}}  # fmt: skip
    np.savez(job, x_ref=x_ref, x_cur_0=x_cur, request=np.array(json.dumps(request)))
    subprocess.run([python, "-I", str(WORKER), str(job), str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())
    return time.perf_counter() - t, {**result, **result["windows"][0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drift-python", required=True)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--p-val", type=float, default=0.05)
    args = parser.parse_args()
    x_ref, x_cur, cats = matrices(args.rows, args.cols)
    try:
        import alibi_detect  # noqa: F401

        have_alibi = True
    except ImportError:
        have_alibi = False

    cold = {"drift_python": [cold_import_s(args.drift_python) for _ in range(3)]}
    t = time.perf_counter()
    subprocess.run([args.drift_python, "-c", "pass"], check=True)
    interpreter_s = time.perf_counter() - t
    if have_alibi:
        cold["this_python"] = [cold_import_s(sys.executable) for _ in range(3)]
        # What in-process really adds to a drift task, which has numpy, pandas and scipy.stats loaded already.
        after = "import numpy, pandas, scipy.stats"
        cold["this_python_after_pandas_scipy"] = [cold_import_s(sys.executable, after) for _ in range(3)]
        inprocess(x_ref, x_cur, cats, args.p_val)  # warm (the import, paid once per task)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            row = {"load1": os.getloadavg()[0]}
            wall, result = via_worker(args.drift_python, x_ref, x_cur, cats, args.p_val, Path(tmp))
            row |= {"subprocess_s": wall, "worker_s": result["seconds"]}  # worker_s: fit, save, predict (imports paid)
            if have_alibi:
                row["inprocess_s"], p_in = inprocess(x_ref, x_cur, cats, args.p_val)
                row["same_p_values"] = bool(np.allclose(p_in, result["p_val"], rtol=0, atol=1e-9))
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    med = {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0] if k != "same_p_values"}
    med["bare_interpreter_s"] = round(interpreter_s, 3)
    med["cold_import_alibi_s"] = {k: round(statistics.median(v), 3) for k, v in cold.items()}
    if have_alibi:
        med["same_p_values"] = all(r["same_p_values"] for r in rows)
    med |= {
        "rows": args.rows,
        "cols": args.cols,
        "rounds": args.rounds,
        "drifted": result["is_drift"],
        "worker_versions": result["versions"],
        "this_numpy": np.__version__,
    }
    print(json.dumps(med))


if __name__ == "__main__":
    main()
