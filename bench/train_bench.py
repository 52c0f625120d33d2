"""Benchmark: the train DAG on N rows (default 1M) against a bare script doing the same steps.

Not a test: it measures and prints, it asserts nothing about time. Both sides run in this
process, on the same data version, on this machine, one after the other:

- **airflow**: ``dag.test()`` of ``credit_risk_train`` (pull → GE → features → LightGBM →
  MLflow → register → gate → Bento), with Airflow's task runner, XCom and re-reads from the
  DVC remote between tasks;
- **bare**: one plain function that does the same steps once, in memory: read the dataset,
  validate with the same GE suite, train, evaluate, log to MLflow, register, build a Bento.

Usage: ``python -m bench.train_bench [--rows 1000000] [--weeks 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def _prepare(home: Path, rows: int, weeks: int) -> None:
    os.environ["LOOPLINE_HOME"] = str(home)
    from loopline.core.settings import ensure_dirs, get_settings

    get_settings.cache_clear()
    settings = ensure_dirs(get_settings())
    os.environ.update(settings.as_env())
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)

    from loopline.ingestion.data_registry import DataRegistry
    from loopline.ingestion.ingest import zones_for
    from tests.generators import credit_risk as datagen

    DataRegistry(settings.data_registry, settings.dvc_remote_url).init()
    landing = zones_for("credit_risk", settings).landing
    landing.mkdir(parents=True, exist_ok=True)
    per_week = rows // weeks
    for week in range(weeks):
        datagen.write_batch(datagen.make_batch(week, n_rows=per_week, seed=7), landing / f"bench_w{week}.parquet")


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))


def bare_train(settings) -> dict:
    """The same steps, written as one straightforward script (the baseline)."""
    import bentoml
    import mlflow
    from mlflow.models import infer_signature

    from loopline.core.features import build_features
    from loopline.core.spec import load_spec
    from loopline.ingestion.data_registry import DataRegistry
    from loopline.ingestion.validation import validate_frame
    from loopline.training import trainer as training

    spec = load_spec("credit_risk", settings.models_dir)
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    version = registry.resolve("credit_risk")
    with tempfile.TemporaryDirectory() as tmp:
        frame = registry.load(version, Path(tmp) / "data")
    raw = frame.assign(applied_at=frame["applied_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    assert validate_frame(
        raw,
        "bench",
        spec.dataset.expectation_suite,
        settings.expectations_dir,
        entity_id=spec.dataset.entity_id,
        spec=spec,
    ).success
    split = training.time_split(training.labelled(frame, spec), spec)
    model = training.train(split, spec, {**spec.training.params, "seed": spec.training.seed})
    metrics = training.evaluate(model.booster, split.holdout, spec)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment("bench_bare")
    features = build_features(split.holdout.head(200), spec)
    with mlflow.start_run():
        mlflow.log_metrics({f"holdout.{k}": v for k, v in metrics.items()})
        info = mlflow.lightgbm.log_model(
            model.booster, name="model", signature=infer_signature(features, model.booster.predict(features))
        )
    mv = mlflow.register_model(info.model_uri, "bench_bare")
    from loopline.serving.packaging import MODEL_PIN_FILE, build_context

    bento_model = bentoml.mlflow.import_model("credit_risk", model_uri=f"models:/bench_bare/{mv.version}")
    ctx = build_context("credit_risk", settings, settings.work_dir / "bench-bare-build")
    (ctx / MODEL_PIN_FILE).write_text(json.dumps({"tag": str(bento_model.tag)}))
    sys.modules.pop("service", None)
    bentoml.bentos.build(
        "service:ModelService",
        name="bench-bare",
        build_ctx=str(ctx),
        include=["service.py", "spec.yaml", MODEL_PIN_FILE, "loopline/**/*.py"],
        models=[str(bento_model.tag)],
    )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--weeks", type=int, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="loopline-bench-"))
    print(f"preparing {args.rows:,} rows in {args.weeks} weekly batches under {home} ...", flush=True)
    _prepare(home, args.rows, args.weeks)
    bag = _dagbag()
    start = time.perf_counter()
    ingest = bag.dags["credit_risk_ingest"].test(logical_date=datetime(2026, 6, 1, tzinfo=UTC))
    ingest_s = time.perf_counter() - start
    assert ingest.state == "success", ingest.state

    from loopline.core.settings import get_settings

    settings = get_settings()
    start = time.perf_counter()
    train = bag.dags["credit_risk_train"]  # dag.test() is a manual run: a person's run says why
    dag_run = train.test(logical_date=datetime(2026, 6, 2, tzinfo=UTC), run_conf={"reason": "benchmark"})
    airflow_s = time.perf_counter() - start
    assert dag_run.state == "success", dag_run.state
    task_times = {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in dag_run.get_task_instances()}

    start = time.perf_counter()
    bare_train(settings)
    bare_s = time.perf_counter() - start

    print(f"\nrows: {args.rows:,}   (ingest DAG for reference: {ingest_s:.1f} s)")
    print(f"{'train DAG (dag.test)':<28}{airflow_s:>9.1f} s")
    for task_id, seconds in task_times.items():
        print(f"  {task_id:<26}{seconds:>9.1f} s")
    print(f"{'bare script, same steps':<28}{bare_s:>9.1f} s")
    print(f"ratio airflow / bare: {airflow_s / bare_s:.2f}x")


if __name__ == "__main__":
    main()
