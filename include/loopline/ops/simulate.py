"""``loopline simulate``: weeks of compressed time through the real DAGs, with a drift at week k.

Any model folder with a generator (``models/<name>/generator.py``) can be simulated. Each
simulated week: that week's rows are scored by the running service (a real
`bentoml serve`, so the prediction log fills as in production); last week's outcomes
land; the drift DAG runs (outcomes in, drift check, maybe a retrain trigger); the week's
batch lands and the ingest DAG versions it. A triggered retrain runs the train DAG with
the drift DAG's conf, and a challenger goes through the rollout DAG under traffic.
Rollout bake times are compressed from minutes to seconds (a copy of the model specs), and
each week's drift check looks at that week's traffic (the drift DAG's `window_start` param);
the drift thresholds, gates and storm guard are the real ones. The train DAG runs only when
the drift DAG asks for it, so the timeline shows the loop on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from loopline.core.dag_factory import dag_id
from loopline.core.settings import Settings, get_settings
from loopline.core.spec import ModelSpec
from loopline.core.tasks import task_of
from loopline.ops.demo_data import DriftKnobs, load_generator, write_batch
from loopline.serving.bento_server import BentoServer

COMPRESSED_ROLLOUT = {
    "poll_seconds": 2,
    "shadow_seconds": 8,
    "bake_seconds": 8,
    "max_step_seconds": 120,
    "gates": {"min_samples": 100, "min_labelled": 100},
}


def compressed_models_dir(settings: Settings, dest: Path, shadow: bool = True) -> Path:
    """A copy of the model specs whose rollout timings run in seconds; nothing else differs.

    ``shadow=False``: no shadow phase, so a rollout's first gates are a canary step's.
    """
    shutil.copytree(settings.models_dir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    timings = {**COMPRESSED_ROLLOUT, **({} if shadow else {"shadow_seconds": 0})}
    for spec_file in dest.glob("*/spec.yaml"):
        spec = yaml.safe_load(spec_file.read_text())
        gates = {**spec.get("rollout", {}).get("gates", {}), **COMPRESSED_ROLLOUT["gates"]}
        spec["rollout"] = {**spec.get("rollout", {}), **timings, "gates": gates}
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


@dataclass
class Week:
    week: int
    shifted: bool
    rows: int
    serving: str
    live_quality: float  # the task's live metric (binary AUC, multiclass accuracy, regression sMAPE)
    data_version: str = ""
    drift: str = ""
    triggered: bool = False
    retrain: str = ""
    rollout: str = ""


class Line:
    """The real DAGs, run with dag.test() in this process, and a real service process."""

    def __init__(self, settings: Settings, spec: ModelSpec) -> None:
        from airflow.dag_processing.dagbag import DagBag

        self.settings, self.spec = settings, spec
        self.bag = DagBag(dag_folder=str(settings.project_root / "dags"))
        if self.bag.import_errors:
            raise RuntimeError(f"DAG import errors: {self.bag.import_errors}")
        self.server: BentoServer | None = None

    def run(self, station: str, conf: dict | None = None):
        return self.bag.dags[dag_id(self.spec.name, station)].test(logical_date=datetime.now(UTC), run_conf=conf)

    def serve(self, bento_tag: str) -> None:
        self.server = BentoServer(bento_tag, LOOPLINE_ROUTE_POLL_SECONDS="0.5")
        os.environ["LOOPLINE_SERVICE_URL"] = self.server.url  # where the rollout DAG reads /metrics
        get_settings.cache_clear()

    def score(self, frame) -> list[dict]:
        assert self.server is not None, "serve() first"
        ds = self.spec.dataset
        return self.server.predict(json.loads(frame.drop(columns=[ds.timestamp, ds.target]).to_json(orient="records")))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _land(frame, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_batch(frame, folder / name)


def _live_quality(spec: ModelSpec, batch, answers: list[dict]) -> float:
    import pandas as pd

    task = task_of(spec)
    score = [a.get("score", a.get("prediction", 0.0)) for a in answers]
    if task.name == "multiclass":
        score = [a["probabilities"][a["predicted_class"]] for a in answers]
    decision = [a.get("decision", a.get("predicted_class")) for a in answers]
    outcome = task.labels(batch[spec.dataset.target], spec)
    frame = pd.DataFrame({"score": score, "decision": decision, "outcome": outcome})
    value = task.live_quality(frame, spec)
    return float("nan") if value is None else value


def simulate(model: str, weeks: int, shift_week: int, rows: int, seed: int, out_dir: Path, echo=print) -> list[Week]:
    """Run the timeline; returns one Week per simulated week and writes timeline.json + timeline.png."""
    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.ingestion.ingest import zones_for
    from loopline.monitoring.feedback import outcome_zones

    settings = get_settings()
    os.environ["LOOPLINE_MODELS_DIR"] = str(compressed_models_dir(settings, settings.home / "simulation-models"))
    get_settings.cache_clear()
    settings = get_settings()
    spec = load_spec(model, settings.models_dir)
    datagen = load_generator(spec.model_dir)
    landing = zones_for(spec.dataset.name, settings).landing
    outcomes_landing = outcome_zones(spec, settings).landing
    shift = DriftKnobs(covariate_shift=0.8, concept_shift=0.6)

    line = Line(settings, spec)
    client = tracking.client_for(settings)
    echo("bootstrap: 4 stable weeks → ingest → train → first champion")
    for week in range(4):
        _land(datagen.make_batch(week, rows, seed), landing, f"sim-w{week:02d}.csv")
    line.run("ingest")
    line.run("train", {"reason": "simulation bootstrap"})
    champion = tracking.alias_version(client, model, "champion")
    if champion is None:
        raise RuntimeError("bootstrap training produced no champion")
    line.serve(client.get_model_version(model, champion).tags["loopline.bento_tag"])
    timeline: list[Week] = []
    previous = None
    try:
        for week in range(4, 4 + weeks):
            shifted = week >= shift_week
            week_started = datetime.now(UTC)  # the drift check looks at this week's traffic only
            batch = datagen.make_batch(week, rows, seed, shift if shifted else DriftKnobs())
            answers = line.score(batch)
            serving = "/".join(sorted({a["model_version"] for a in answers}))
            result = Week(week, shifted, len(batch), serving, _live_quality(spec, batch, answers))
            if previous is not None:  # last week's outcomes arrive now
                previous[[spec.dataset.entity_id, spec.dataset.target]].to_csv(
                    outcomes_landing / f"sim-w{week - 1:02d}.csv", index=False
                )
            outcomes_landing.mkdir(parents=True, exist_ok=True)
            line.run("drift", {"window_start": week_started.isoformat()})
            from loopline.monitoring.monitoring_state import MonitoringState

            check = MonitoringState(settings.state_db_uri).latest(model, 1)[0]
            result.drift, result.triggered = check.verdict, check.triggered
            _land(batch, landing, f"sim-w{week:02d}.csv")
            line.run("ingest")
            result.data_version = str(_latest_data_version(settings, spec))
            if check.triggered:
                conf = {"reason": f"drift: {check.verdict}", "data_version": "latest", "drift_report": check.report_uri}
                line.run("train", conf)
                newest = max(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
                result.retrain = f"v{newest.version}: {newest.tags.get('loopline.gate_decision', '?')}"
                if tracking.alias_version(client, model, "challenger"):
                    result.rollout = _rollout_under_traffic(line, datagen, week, seed, shift if shifted else None)
            timeline.append(result)
            echo(_line(result))
            previous = batch
    finally:
        line.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timeline.json").write_text(json.dumps([asdict(w) for w in timeline], indent=2))
    plot(timeline, shift_week, out_dir / "timeline.png", task_of(spec).live_metric)
    return timeline


def _latest_data_version(settings: Settings, spec) -> str:
    from loopline.training.train_flow import registry_for

    return registry_for(settings).resolve(spec.dataset.name, "latest").version


def _rollout_under_traffic(line: Line, datagen, week: int, seed: int, shift) -> str:
    from loopline.core.serving_state import ServingState

    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            knobs = shift or DriftKnobs()
            line.score(datagen.make_batch(week, 200, seed * 1000 + n, knobs))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        line.run("rollout", {"version": "challenger", "mode": "spec"})
    finally:
        stop.set()
        thread.join(timeout=60)
    record = ServingState(line.settings.state_db_uri).rollouts(line.spec.name, 1)[0]
    return f"v{record.candidate_version} {record.status}"


def _line(w: Week) -> str:
    mark = "SHIFT" if w.shifted else "     "
    return (
        f"week {w.week:>2} {mark} served by v{w.serving:<5} live {w.live_quality:.3f}  data {w.data_version:<6}"
        f" drift: {w.drift:<13} {'→ RETRAIN ' + w.retrain if w.triggered else ''}"
        f"{' → rollout ' + w.rollout if w.rollout else ''}"
    )


def plot(timeline: list[Week], shift_week: int, path: Path, metric: str = "auc") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    weeks = [w.week for w in timeline]
    ax.plot(weeks, [w.live_quality for w in timeline], marker="o", label=f"live {metric} of the serving model")
    ax.axvline(shift_week - 0.5, color="grey", linestyle="--", label=f"world shifts (week {shift_week})")
    for w in timeline:  # labels to the right of their point, inside the axes (margins below)
        if w.triggered:
            ax.annotate("drift → retrain", (w.week, w.live_quality), textcoords="offset points", xytext=(8, 6))
        if w.rollout:
            ax.annotate(f"rollout {w.rollout}", (w.week, w.live_quality), textcoords="offset points", xytext=(8, -14))
    ax.margins(x=0.08, y=0.3)
    ax.set_xlabel("simulated week")
    ax.set_ylabel(metric)
    ax.set_title("Loopline simulation: drift → retrain → rollout")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
