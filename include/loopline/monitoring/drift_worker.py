"""The drift check's alibi-detect call, run in ``.venv-drift`` (numpy 1, alibi-detect 0.13) by file path.

alibi-detect 0.13 pins ``numpy<2`` and Feast needs ``numpy>=2``, so the main environment cannot
import alibi-detect (ARCHITECTURE.md, "Two Python environments"). ``loopline.monitoring.detection`` keeps
the encoding, effect sizes, PSI and verdicts; this script does only what needs alibi-detect, in
one call: load the TabularDrift saved in the detector folder, check that it still matches the
request (else fit and save a new one, atomically, in alibi-detect's own folder format) and, when
a live window is given, predict.

Run as ``python -I drift_worker.py REQUEST.npz RESPONSE.json``. It imports only the standard
library, numpy and alibi_detect: ``loopline`` is not installed in ``.venv-drift``.

Request (npz, no pickles): ``x_ref`` (float64, rows x features), live windows ``x_cur_0`` ...
``x_cur_<n-1>`` (float64, same columns; none: fit only), and ``request``: a JSON string with
``protocol``, ``detector_dir``, ``p_val``, ``categories_per_feature`` ({column index: [codes]})
and ``windows`` (n). Response (JSON): ``fitted`` (a detector was fitted and saved by this call),
``stale_reason`` (why the saved one was not used; null when it was, or when there was none),
``windows``: per window ``is_drift`` (0/1), ``p_val`` and ``distance`` (one per feature) and
``threshold`` (the FDR threshold, null without drift), and ``versions`` (numpy, alibi-detect).
Several windows in one call pay the imports once (the bench). On a bad request: exit status 2 and one line on stderr.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

CORRECTION = "fdr"
PROTOCOL = 1  # bumped when the request or response changes shape


class WorkerError(Exception):
    """The request cannot be served; the message is the one line the caller shows."""


def read_request(path: Path) -> tuple[dict[str, Any], np.ndarray, list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("request", "x_ref") if k not in npz.files]
        if missing:
            raise WorkerError(f"{path} lacks {missing}; it has {sorted(npz.files)}")
        request = json.loads(str(npz["request"]))
        for key in ("protocol", "detector_dir", "p_val", "categories_per_feature", "windows"):
            if key not in request:
                raise WorkerError(f"the request in {path} lacks {key!r}")
        if request["protocol"] != PROTOCOL:
            raise WorkerError(f"the request speaks protocol {request['protocol']}, this worker {PROTOCOL}")
        x_ref = np.asarray(npz["x_ref"], dtype="float64")
        names = [f"x_cur_{i}" for i in range(int(request["windows"]))]
        absent = [n for n in names if n not in npz.files]
        if absent:
            raise WorkerError(f"{path} lacks the windows {absent}")
        windows = [np.asarray(npz[n], dtype="float64") for n in names]
    if x_ref.ndim != 2 or not len(x_ref):
        raise WorkerError(f"x_ref must be a non-empty 2-d matrix, got shape {x_ref.shape}")
    for i, x_cur in enumerate(windows):
        if x_cur.ndim != 2 or x_cur.shape[1] != x_ref.shape[1] or not len(x_cur):
            raise WorkerError(f"x_cur_{i} has shape {x_cur.shape}; x_ref has {x_ref.shape[1]} columns")
    return request, x_ref, windows


def categories(request: dict[str, Any]) -> dict[int, list[int]]:
    return {int(k): [int(v) for v in vals] for k, vals in request["categories_per_feature"].items()}


def stale_reason(detector: Any, x_ref: np.ndarray, wanted: dict[int, list[int]], p_value: float) -> str | None:
    """Why a detector does not match this reference, these categories and this p-value (None: it matches)."""
    if type(detector).__name__ != "TabularDrift":
        return f"it is a {type(detector).__name__}, not a TabularDrift"
    if not math.isclose(float(detector.p_val), p_value, rel_tol=0, abs_tol=1e-12):
        return f"it was fitted at p={detector.p_val}, the policy says p={p_value}"
    stored = np.asarray(detector.x_ref)
    if stored.shape != x_ref.shape or not np.array_equal(stored, x_ref):
        return f"its reference ({stored.shape[0]} rows x {stored.shape[1]}) is not this reference's sample"
    stored_categories = {int(k): [int(v) for v in vals] for k, vals in detector.x_ref_categories.items()}
    if stored_categories != wanted:
        return "its categorical levels differ from the spec's"
    if getattr(detector, "correction", CORRECTION) != CORRECTION:
        return f"it uses correction={detector.correction!r}, not {CORRECTION!r}"
    return None


def save(detector: Any, path: Path) -> None:
    """alibi_detect.saving, atomically: a half-written detector is never visible at ``path``."""
    from alibi_detect.saving import save_detector

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    save_detector(detector, tmp)
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError:
        if not (path / "config.toml").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent task saved its (identical) detector first
    shutil.rmtree(old, ignore_errors=True)


def load_or_fit(
    path: Path, x_ref: np.ndarray, wanted: dict[int, list[int]], p_value: float
) -> tuple[Any, bool, str | None]:
    """(detector, fitted by this call, why the saved one was not used)."""
    from alibi_detect.cd import TabularDrift

    reason = None
    if (path / "config.toml").is_file():
        from alibi_detect.saving import load_detector

        try:
            detector = load_detector(path)
        except Exception as err:  # alibi-detect raises many types for a broken or foreign folder
            reason = f"it cannot be loaded ({type(err).__name__}: {err})"
        else:
            reason = stale_reason(detector, x_ref, wanted, p_value)
            if reason is None:
                return detector, False, None
    detector = TabularDrift(x_ref, p_val=p_value, categories_per_feature=wanted, correction=CORRECTION)
    save(detector, path)
    return detector, True, reason


def serve(request: dict[str, Any], x_ref: np.ndarray, windows: list[np.ndarray]) -> dict[str, Any]:
    import alibi_detect

    started = time.perf_counter()
    detector, fitted, reason = load_or_fit(
        Path(request["detector_dir"]), x_ref, categories(request), float(request["p_val"])
    )
    answers = []
    for x_cur in windows:
        data = detector.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
        answers.append(
            {
                "is_drift": int(data["is_drift"]),
                "p_val": [float(p) for p in np.asarray(data["p_val"]).ravel()],
                "distance": [float(d) for d in np.asarray(data["distance"]).ravel()],
                # FDR: the scalar threshold the p-values passed when there is drift; without drift
                # alibi-detect returns the whole step-up ladder, which nobody reads: null.
                "threshold": float(data["threshold"]) if np.ndim(data["threshold"]) == 0 else None,
            }
        )
    return {
        "protocol": PROTOCOL,
        "fitted": fitted,
        "stale_reason": reason,
        "windows": answers,
        "versions": {"numpy": np.__version__, "alibi_detect": alibi_detect.__version__},
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: drift_worker.py REQUEST.npz RESPONSE.json", file=sys.stderr)
        return 2
    try:
        request, x_ref, windows = read_request(Path(argv[0]))
        response = serve(request, x_ref, windows)
    except WorkerError as err:
        print(f"drift worker: {err}", file=sys.stderr)
        return 2
    out = Path(argv[1])
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(response))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
