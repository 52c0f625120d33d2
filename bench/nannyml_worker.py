"""NannyML's side of bench.drift_bench, run by the separate NannyML venv's Python (imports nothing of Loopline).

``python nannyml_worker.py JOB.json``: the job names the task (``binary`` | ``regression``), the
reference and windows parquet files, the feature columns and where to write the result JSON:
``{"fit_seconds": s, "windows": {id: {"metric": value, ..., "seconds": s}}}``. CBPE for a
classifier (ROC AUC, precision, recall at the decision), DLE for a regressor (MAE); each window
is one chunk, estimated on its own and timed from the frame to the estimate.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no analytics calls from the bench


def main(job_path: str) -> None:
    warnings.filterwarnings("ignore")
    import nannyml
    import pandas as pd

    job = json.loads(open(job_path).read())
    reference = pd.read_parquet(job["reference"])
    windows = pd.read_parquet(job["windows"])
    size = int(job["window_rows"])
    if job["task"] == "binary":
        metrics = ["roc_auc", "precision", "recall"]
        estimator = nannyml.CBPE(
            y_pred_proba="score", y_pred="pred", y_true="outcome", problem_type="classification_binary",
            metrics=metrics, chunk_size=size,
        )  # fmt: skip
    else:
        metrics = ["mae"]
        estimator = nannyml.DLE(
            feature_column_names=job["features"], y_pred="score", y_true="outcome", metrics=metrics, chunk_size=size
        )
    t = time.perf_counter()
    estimator.fit(reference)
    out = {"fit_seconds": time.perf_counter() - t, "version": nannyml.__version__, "windows": {}}
    for key, window in windows.groupby("window", sort=False):
        rows = window.drop(columns=["window", "outcome"])
        t = time.perf_counter()
        result = estimator.estimate(rows).filter(period="analysis").to_df()
        seconds = time.perf_counter() - t
        estimates = {m: float(result[(m, "value")].iloc[0]) for m in metrics}
        out["windows"][str(key)] = {**estimates, "seconds": seconds}
    open(job["out"], "w").write(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
