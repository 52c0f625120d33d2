"""The drift check's one alibi-detect call, in its own environment (``.venv-drift``): npz in, JSON out.

    .venv-drift/bin/python bench/spikes/drift_worker.py job.npz out.json

``job.npz``: ``x_ref`` and ``x_cur`` (float matrices, the encoding of loopline.monitoring.detection) and
``config`` (a JSON string: ``p_val``, ``categories_per_feature`` {column index: [codes]}). Writes
``is_drift``, per-feature ``p_val`` and ``distance``, the FDR ``threshold`` and the worker's own timings.
The interface is numbers only (no pickles, no alibi objects cross it), so either side can change numpy.
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.perf_counter()


def main(job: str, out: str) -> None:
    import numpy as np

    t = time.perf_counter()
    from alibi_detect.cd import TabularDrift

    import_s = time.perf_counter() - t
    with np.load(job, allow_pickle=False) as data:
        x_ref, x_cur = data["x_ref"], data["x_cur"]
        config = json.loads(str(data["config"]))
    t = time.perf_counter()
    detector = TabularDrift(
        x_ref,
        p_val=float(config["p_val"]),
        categories_per_feature={int(k): [int(c) for c in v] for k, v in config["categories_per_feature"].items()},
        correction="fdr",
    )
    pred = detector.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    compute_s = time.perf_counter() - t
    result = {
        "is_drift": int(pred["is_drift"]),
        "p_val": [float(p) for p in pred["p_val"]],
        "distance": [float(d) for d in pred["distance"]],
        "threshold": float(pred["threshold"]),
        "worker": {"import_s": import_s, "compute_s": compute_s, "total_s": time.perf_counter() - T0},
        "versions": {"alibi_detect": __import__("alibi_detect").__version__, "numpy": np.__version__},
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
