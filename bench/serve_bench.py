"""Benchmark: the Loopline online service against a bare FastAPI app and in-process scoring.

Not a test: it measures and prints, it asserts nothing about time. In one run, on the
same model (one booster file) and the same feature/scoring code:

- **service**: ``bentoml serve <bento tag>`` of a Bento built by ``loopline.serving.packaging``,
  exactly as in production: champion/canary routing from the serving state store (route
  polled every ``LOOPLINE_ROUTE_POLL_SECONDS``), Prometheus metrics, the prediction log,
  BentoML's middlewares and access log, one worker, and natural batching of concurrent
  requests (``loopline.serving.batching``; the service's own settings: one worker);
- **bare FastAPI**: ``uvicorn bench.bare_fastapi:app``, one worker, the same pydantic
  validation, request/response JSON and ``score_frame``, nothing else; a plain ``def``
  endpoint on Starlette's thread pool (see that module's docstring). With
  ``--bare-one-thread`` a second bare server limited to one thread (BentoML's default)
  tells the thread model's share of a gap from the per-request work's;
- **in-process**: ``score_frame`` called in a loop on prebuilt DataFrames (no HTTP, no
  validation, no JSON): the floor.

Both servers are driven by the same asyncio (uvloop) + aiohttp client in this process:
N keep-alive connections posting pre-encoded bodies of generated applications back to
back, single applications and batches of 50. After a warm-up, each server is measured
in ``--rounds`` alternating slices, so a burst of load from elsewhere on the machine hits
both alike. Throughput and latencies count requests completed inside the slices (like
wrk); the server's CPU per request (psutil, the whole process tree) counts all of them.
Client and servers share this machine's cores: the table shows the CPU each side used
and what other processes used meanwhile, so a saturated client or a busy machine shows.

Setup is self-contained in a temporary ``LOOPLINE_HOME`` (never a developer's state):
``loopline generate`` + ``loopline train-offline`` → MLflow run, registered version 1,
alias ``champion``, the first-champion route in the serving state store → Bento.

Before the HTTP runs, the **per-request cost in-process** for one application: the floor is the
booster's own ``predict`` + ``predict(pred_contrib=True)`` on a prepared numpy row; the platform's
path is the service's own code (request validation, one scoring call of the ``predict`` API: column arrays,
routing, features, scoring, reason codes, Prometheus bookkeeping, the prediction log, the answer
rows) called on a service object outside BentoML, printed stage by stage and as a ratio. After
them, **batch scoring** of a generated file (1M rows) through ``loopline.serving.batch_scoring.score_file``
(MLflow model, parquet in and out, lineage), in rows/s against in-process ``booster.predict`` on
the same rows' prepared features.

Usage: ``python -m bench.serve_bench [--seconds 8] [--concurrency 1,8,64] [--rounds 2] [--batch-rows 1000000]
[--bare-one-thread] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "credit_risk"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH = 50
CONTRIB_SAMPLE = 100_000  # rows the batch floor's pred_contrib rate is measured on
# Variables that could point this run at a developer's state; the bench sets its own.
_FOREIGN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "BENTOML_HOME", "AIRFLOW_HOME", "LOOPLINE_BENTO_MODEL")


@dataclass
class Prepared:
    bento_tag: str
    model_version: str
    booster_file: Path
    prediction_log_dir: Path


@dataclass
class Result:
    name: str
    payload: str
    apps_per_request: int
    seconds: float  # measurement window(s): throughput and latencies
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: int = 0
    wall: float = 0.0  # window(s) plus draining: CPU rates (cores)
    drained: int = 0  # completed after the window closed: not in throughput/latency, but in CPU per request
    server_cpu: float | None = None  # CPU seconds used by the server process tree while measured
    client_cpu: float | None = None  # CPU seconds used by this process (the load generator)
    machine_cpu: float | None = None  # CPU seconds used by everything on the machine while measured

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_per_request(self) -> float | None:
        """Server CPU seconds per completed request (in the window or drained after it)."""
        if self.server_cpu is None:
            return None
        return self.server_cpu / max(len(self.latencies) + self.drained, 1)

    @property
    def other_cores(self) -> float:
        """CPU used meanwhile by processes outside this measurement (noise), in cores."""
        other = (self.machine_cpu or 0.0) - (self.server_cpu or 0.0) - (self.client_cpu or 0.0)
        return max(other, 0.0) / self.wall

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def row(self) -> str:
        mean = statistics.fmean(self.latencies) * 1000 if self.latencies else float("nan")
        cpu = self.cpu_per_request
        cpu_req = f"{cpu * 1000:8.2f}" if cpu is not None else f"{'-':>8}"
        cores = f"{self.server_cpu / self.wall:6.2f}" if self.server_cpu is not None else f"{'-':>6}"
        client = f"{self.client_cpu / self.wall:6.2f}" if self.client_cpu is not None else f"{'-':>6}"
        others = f"{self.other_cores:6.2f}" if self.machine_cpu is not None else f"{'-':>6}"
        return (
            f"{self.name:<24}{self.rps:>9.1f}{self.rps * self.apps_per_request:>10.0f}{self.pct(0.5):>9.2f}"
            f"{self.pct(0.99):>9.2f}{mean:>9.2f}{self.errors:>7}{cpu_req}   {cores}   {client}   {others}"
        )


HEADER = (
    f"{'target':<24}{'req/s':>9}{'apps/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'errors':>7}"
    f"{'srv CPU':>8}   {'srv':>6}   {'client':>6}   {'other':>6}\n"
    f"{'':<24}{'':>9}{'':>10}{'':>9}{'':>9}{'':>9}{'':>7}{'ms/req':>8}   {'cores':>6}   {'cores':>6}   {'cores':>6}"
)


# ----------------------------------------------------------------------------- setup


def _isolate(home: Path):
    """Point every Loopline and library setting at ``home`` for this process and its children."""
    for key in list(os.environ):
        if key.startswith("LOOPLINE_") or key in _FOREIGN_ENV:
            del os.environ[key]
    os.environ["LOOPLINE_HOME"] = str(home)
    from loopline.core.settings import apply_library_env, ensure_dirs, get_settings

    get_settings.cache_clear()
    return ensure_dirs(apply_library_env(get_settings()))


def _loopline(*args: str) -> None:
    """The ``loopline`` command, run in this process (two interpreter start-ups saved); output muted."""
    from loopline.ops.cli import app

    with contextlib.redirect_stdout(io.StringIO()):
        app(list(args), standalone_mode=False)


def prepare(home: Path) -> Prepared:
    """Data → trained booster → MLflow version 1 (champion, serving route) → Bento."""
    settings = _isolate(home)
    data, artifacts = home / "bench-data", home / "bench-model"
    began = time.monotonic()
    _loopline(
        "generate", "--model", MODEL, "--weeks", "0-5", "--rows", "2000", "--format", "parquet", "--out", str(data)
    )
    _loopline("train-offline", "--model", MODEL, "--data", str(data), "--out", str(artifacts))
    print(f"  loopline generate + train-offline: {time.monotonic() - began:.0f} s", flush=True)
    began = time.monotonic()

    import bentoml
    import lightgbm as lgb
    import mlflow
    import yaml
    from mlflow.models import infer_signature

    from loopline.core import tracking
    from loopline.core.features import build_features
    from loopline.core.serving_state import Route, ServingState
    from loopline.core.spec import load_spec
    from loopline.serving.packaging import MODEL_PIN_FILE, build_bento
    from tests.generators import credit_risk as datagen

    spec = load_spec(MODEL, settings.models_dir)
    booster = lgb.Booster(model_file=str(artifacts / "model.txt"))
    client = tracking.client_for(settings)
    features = build_features(datagen.make_batch(9, n_rows=200, seed=3), spec)
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, MODEL, settings)) as run:
        info = mlflow.lightgbm.log_model(
            booster,
            name=tracking.MODEL_ARTIFACT,
            signature=infer_signature(features, booster.predict(features)),
        )
        mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
    version, _ = tracking.register(client, MODEL, run.info.run_id)
    client.set_registered_model_alias(MODEL, tracking.CHAMPION_ALIAS, version)
    state = ServingState(settings.state_db_uri)
    current = state.route(MODEL)
    first = Route(MODEL, champion_version=version, revision=current.revision)
    state.change(first, "first_champion", "serve_bench", "benchmark setup: the first model serves all traffic")
    print(
        f"  MLflow run, version {version}, alias champion, serving route: {time.monotonic() - began:.0f} s", flush=True
    )
    began = time.monotonic()
    tag = build_bento(MODEL, version, settings)
    print(f"  Bento {tag}: {time.monotonic() - began:.0f} s", flush=True)

    # The booster file the service's pinned model holds: the bare app loads these exact bytes.
    pinned = json.loads(Path(bentoml.bentos.get(tag).path_of(f"src/{MODEL_PIN_FILE}")).read_text())["tag"]
    mlflow_dir = Path(bentoml.models.get(pinned).path_of("mlflow_model"))
    flavor = yaml.safe_load((mlflow_dir / "MLmodel").read_text())["flavors"]["lightgbm"]
    return Prepared(tag, version, mlflow_dir / flavor["data"], settings.prediction_log_dir)


def applications(n: int) -> list[dict]:
    """Generated applications as the JSON a client sends (missing values as null)."""
    from tests.generators import credit_risk as datagen

    frame = datagen.make_batch(40, n_rows=n, seed=99).drop(columns=["applied_at", "defaulted"])
    return json.loads(frame.to_json(orient="records"))


# ----------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def wait_ready(self, path: str, timeout: float = 180) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:  # not listening or not ready yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def processes(self) -> int:
        import psutil

        return 1 + len(psutil.Process(self.proc.pid).children(recursive=True))

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its workers only
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Server:
    """Start ``cmd`` + a free port (cmd ends with ``--port``) in its own session; output to a log file."""
    port = _free_port()
    log = logs / f"server-{port}.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [*cmd, str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    out.close()
    return Server(name, proc, f"http://127.0.0.1:{port}", log)


# ----------------------------------------------------------------------------- load


async def _load(url: str, bodies: list[bytes], concurrency: int, seconds: float, result: Result | None) -> float:
    """N workers, each on its own keep-alive connection, posting back to back for ``seconds``.

    Like wrk: throughput and latencies count the requests completed inside the window;
    requests still in flight at its end are awaited (so the next slice starts clean) and
    counted only in ``drained``, for the server's CPU per request. Returns the window length.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                done = time.perf_counter()
                if result is None:
                    continue
                if not ok:
                    result.errors += 1
                elif done <= deadline:
                    result.latencies.append(done - t0)
                else:
                    result.drained += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return seconds


def _machine_busy() -> float:
    """CPU seconds all processes on this machine have used (for the 'other' column: noise)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def uvloop_load(server: Server, bodies: list[bytes], concurrency: int, seconds: float) -> None:
    """Unmeasured load (warm-up)."""
    import uvloop

    uvloop.run(_load(f"{server.url}/predict", bodies, concurrency, seconds, None))


def measure(server: Server, bodies: list[bytes], concurrency: int, seconds: float, result: Result) -> None:
    """One measured slice of load on one server, added to ``result`` (latencies, wall time, CPU)."""
    import uvloop

    cpu0, client0, machine0, wall0 = server.cpu_seconds(), time.process_time(), _machine_busy(), time.perf_counter()
    result.seconds += uvloop.run(_load(f"{server.url}/predict", bodies, concurrency, seconds, result))
    result.wall += time.perf_counter() - wall0
    result.server_cpu = (result.server_cpu or 0.0) + server.cpu_seconds() - cpu0
    result.client_cpu = (result.client_cpu or 0.0) + time.process_time() - client0
    result.machine_cpu = (result.machine_cpu or 0.0) + _machine_busy() - machine0


def in_process(booster_file: Path, frames: list, per: int, payload: str, seconds: float) -> Result:
    """score_frame in a loop, one call at a time (prebuilt DataFrames: no HTTP, JSON or validation)."""
    import lightgbm as lgb

    from loopline.core.settings import get_settings
    from loopline.core.spec import load_spec
    from loopline.serving.scoring import score_frame

    spec = load_spec(MODEL, get_settings().models_dir)
    booster = lgb.Booster(model_file=str(booster_file))
    for frame in frames[:20]:  # warm-up
        score_frame(booster, frame, spec)
    result = Result("in-process score_frame", payload, per, 0.0)
    cpu0, machine0 = time.process_time(), _machine_busy()
    started = time.perf_counter()
    deadline = started + seconds
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        score_frame(booster, frames[i % len(frames)], spec)
        result.latencies.append(time.perf_counter() - t0)
        i += 1
    result.seconds = result.wall = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu0
    result.machine_cpu = _machine_busy() - machine0
    return result


def _timed(call, repeat: int) -> float:
    """Median seconds of ``call()`` over ``repeat`` calls, after a tenth as many unmeasured."""
    for _ in range(max(repeat // 10, 3)):
        call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_request_cost(booster_file: Path, model_version: str, app: dict, log_dir: Path, repeat: int) -> list[tuple]:
    """One application through the service's own code in-process, stage by stage, against the booster's floor.

    The service object is made without BentoML's runner (``ModelService.inner``), with the same attributes
    ``__init__`` gives it (metrics in a private Prometheus registry); ``_score`` is one scoring call, what
    the ``predict`` API hands its batcher (the batcher's hand-over to its thread is HTTP-side, not counted).
    Returns (stage, seconds) rows: the floor first, then the stages, then the whole path.
    """
    os.environ.setdefault("LOOPLINE_SERVICE_MODEL_DIR", str(PROJECT_ROOT / "models" / MODEL))
    import lightgbm as lgb
    import numpy as np
    import prometheus_client as prom

    from loopline.core.features import feature_set
    from loopline.serving import bento_service
    from loopline.serving.batching import NaturalBatcher
    from loopline.serving.log_monitor import PredictionLogMonitor
    from loopline.serving.online import RoutedScorer, Rows
    from loopline.serving.prediction_log import monitor_name
    from loopline.serving.request_schema import answers

    spec, cls = bento_service.SPEC, bento_service.ModelService.inner
    booster = lgb.Booster(model_file=str(booster_file))
    svc = object.__new__(cls)
    svc.settings = dataclasses.replace(bento_service.get_settings(), prediction_log_dir=log_dir)
    svc.scorer = RoutedScorer(spec, load=None, state=None, pinned_version=model_version, pinned_booster=booster)
    svc.secret = svc.settings.pseudonym_secret
    svc.prediction_log = PredictionLogMonitor(monitor_name(spec.name), str(log_dir))
    registry = prom.CollectorRegistry()
    labels = ["model_version", "arm"]
    svc.predictions = prom.Counter("p", "p", [*labels, "decision"], registry=registry)
    svc.errors = prom.Counter("e", "e", labels, registry=registry)
    svc.latency = prom.Histogram("l", "l", labels, registry=registry)
    svc.scores = prom.Histogram("s", "s", labels, buckets=[i / 20 for i in range(1, 21)], registry=registry)
    svc.weights = prom.Gauge("w", "w", labels, registry=registry)
    svc._weights_revision, svc._weight_series = None, set()
    svc._label_series = {}
    svc.batcher = NaturalBatcher(svc._score, bento_service.MAX_BATCH, bento_service.MAX_WAIT_SECONDS)  # idle

    application = bento_service.Application
    validated = [application.model_validate(app)]
    names = spec.features.names

    def columns() -> Rows:
        values = {name: [getattr(a, name) for a in validated] for name in names}
        return Rows.from_values(values, [getattr(a, spec.dataset.entity_id) for a in validated], spec)

    rows = columns()
    features = feature_set(spec)
    row = np.column_stack([features.build_arrays(rows.columns)[c] for c in features.columns])
    result = svc.scorer.score(rows)
    request_ids = [uuid.uuid4().hex]

    def floor() -> None:
        booster.predict(row, num_threads=1)
        booster.predict(row, pred_contrib=True, num_threads=1)

    stages = [
        ("floor: booster predict + pred_contrib (numpy row)", floor),
        ("request validation (pydantic)", lambda: application.model_validate(app)),
        ("column arrays from the request", columns),
        ("features (FeatureSet.build_arrays)", lambda: features.build_arrays(rows.columns)),
        ("routing + features + scoring + reasons", lambda: svc.scorer.score(rows)),
        ("Prometheus bookkeeping (_observe)", lambda: svc._observe(result)),
        ("prediction log (_log)", lambda: svc._log(result, request_ids, [0.001], ["anonymous"])),
        ("answer rows", lambda: answers(result, request_ids, spec, bento_service.Prediction)),
        ("whole path: validation + one scoring call", lambda: svc._score([application.model_validate(app)])),
    ]
    return [(name, _timed(call, repeat)) for name, call in stages]


def report_per_request(rows: list[tuple]) -> None:
    floor, whole = rows[0][1], rows[-1][1]
    print("\nper-request cost in-process, one application (median of repeated calls, one thread):")
    for name, seconds in rows:
        print(f"  {name:<52}{seconds * 1e6:>9.0f} us{seconds / floor:>8.2f}x floor")
    print(f"platform path / floor: {whole / floor:.2f}x (target <= 1.50: {_verdict(whole / floor <= 1.5)})")


def batch_file(rows: int, work: Path) -> tuple[dict, float]:
    """score_file on a generated ``rows``-row parquet file vs in-process booster.predict on the same rows."""
    import lightgbm as lgb
    import mlflow.lightgbm

    from loopline.core.features import build_features
    from loopline.core.settings import get_settings
    from loopline.core.spec import load_spec
    from loopline.serving.batch_scoring import resolve_model, score_file
    from tests.generators import credit_risk as datagen

    settings = get_settings()
    spec = load_spec(MODEL, settings.models_dir)
    began = time.monotonic()
    frame = datagen.make_batch(41, n_rows=rows, seed=7).drop(columns=["defaulted"])
    path = work / f"score-{rows}.parquet"
    frame.to_parquet(path, index=False)
    made = time.monotonic() - began
    t0 = time.perf_counter()
    result = score_file(MODEL, str(path), "champion", work / "scores", settings)
    platform = time.perf_counter() - t0
    assert result.rows == rows
    _, uri = resolve_model(MODEL, "champion", settings)
    booster: lgb.Booster = mlflow.lightgbm.load_model(uri)
    features = build_features(frame, spec).to_numpy(dtype=float)
    t0 = time.perf_counter()
    booster.predict(features, num_threads=0)
    predict = time.perf_counter() - t0
    sample = features[:CONTRIB_SAMPLE]  # pred_contrib is linear in rows and slow: its rate from a sample
    t0 = time.perf_counter()
    booster.predict(sample, pred_contrib=True, num_threads=0)
    contrib = (time.perf_counter() - t0) * rows / len(sample)
    return {"rows": rows, "platform": platform, "predict": predict, "contrib": contrib}, made


def report_batch(b: dict) -> None:
    rows = b["rows"]
    platform, predict, both = rows / b["platform"], rows / b["predict"], rows / (b["predict"] + b["contrib"])
    print(f"\nbatch scoring of a {rows:,}-row parquet file (all cores):")
    print(f"  score_file (read, features, predict, reasons, write parquet + lineage): {platform:>12,.0f} rows/s")
    print(f"  in-process booster.predict on the prepared rows:                       {predict:>12,.0f} rows/s")
    print(
        f"  in-process booster.predict + pred_contrib (the reason codes' part):    {both:>12,.0f} rows/s"
        f" (pred_contrib's rate on {min(rows, CONTRIB_SAMPLE):,} rows)"
    )
    print(f"score_file / predict: {platform / predict:.2f}x; / (predict + pred_contrib): {platform / both:.2f}x")


def _same_scores(service: Server, bare: Server, apps: list[dict]) -> float:
    """Largest score difference between the two servers on the same applications (expected 0)."""
    body = json.dumps({"instances": apps}).encode()
    scores = []
    for server in (service, bare):
        request = urllib.request.Request(f"{server.url}/predict", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            scores.append([p["score"] for p in json.loads(response.read())])
    return max(abs(a - b) for a, b in zip(*scores, strict=True))


def _logged_rows(log_dir: Path) -> int:
    from loopline.serving.prediction_log import log_files

    return sum(sum(1 for _ in path.open()) for path in log_files(log_dir, MODEL))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


RATIO_HEADER = (
    f"{'payload':<10}{'conns':>6}{'service req/s':>15}{'bare req/s':>12}{'throughput':>12}"
    f"{'service p99':>13}{'bare p99':>10}{'p99':>8}  verdict (throughput >= 1.00x, p99 <= 1.00x)"
)


def ratio_rows(rows: dict[tuple[str, int], list[Result]]) -> list[str]:
    """One line per (payload, connections): the service against bare FastAPI, as ratios."""
    lines = [RATIO_HEADER]
    for (payload, concurrency), results in rows.items():
        service, bare = results[0], results[1]
        throughput = service.rps / bare.rps if bare.rps else float("nan")
        p99 = service.pct(0.99) / bare.pct(0.99) if bare.latencies else float("nan")
        verdict = f"{_verdict(throughput >= 1)}, {_verdict(p99 <= 1)}"
        lines.append(
            f"{payload:<10}{concurrency:>6}{service.rps:>15.1f}{bare.rps:>12.1f}{throughput:>11.2f}x"
            f"{service.pct(0.99):>10.1f} ms{bare.pct(0.99):>7.1f} ms{p99:>7.2f}x  {verdict}"
        )
    return lines


def report(rows: dict[tuple[str, int], list[Result]], args: argparse.Namespace) -> None:
    for (payload, concurrency), results in rows.items():
        per = results[0].apps_per_request
        print(f"\n{payload}: {per} application(s) per request, {concurrency} concurrent connections")
        print(HEADER)
        for result in results:
            print(result.row())
        service, bare = results[0], results[1]
        if service.cpu_per_request and bare.cpu_per_request:
            extra = service.cpu_per_request - bare.cpu_per_request
            print(
                f"server CPU per request: service {extra * 1000:+.2f} ms over bare FastAPI "
                f"({service.cpu_per_request / bare.cpu_per_request:.2f}x)"
            )
    print("\nHTTP, the service / bare FastAPI:")
    print("\n".join(ratio_rows(rows)))


def _counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"connections must be positive integers, comma separated: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target, payload, concurrency")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per server, payload, concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="alternating slices the measured seconds are cut into")
    parser.add_argument(
        "--concurrency", type=_counts, default=[1, 8, 64], help="concurrent keep-alive connections (default 1,8,64)"
    )
    parser.add_argument("--no-batch", action="store_true", help="skip the batch-of-50 scenario")
    parser.add_argument("--batch-rows", type=int, default=1_000_000, help="rows of the file batch-scored (0: skip)")
    parser.add_argument("--repeat", type=int, default=2000, help="calls per stage of the in-process per-request cost")
    parser.add_argument(
        "--bare-one-thread", action="store_true", help="also a bare FastAPI limited to one thread (BentoML's default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s slices, 1 round, 100k-row file, 200 calls per stage"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary LOOPLINE_HOME")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.rounds = 1.0, 0.5, 1
        args.batch_rows, args.repeat = min(args.batch_rows, 100_000), 200
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="loopline-serve-bench-"))
    servers: list[Server] = []
    try:
        print(f"setup in {home}: generate -> train-offline -> MLflow v1 (champion, route) -> Bento ...", flush=True)
        prepared = prepare(home)

        env = {**os.environ, "LOOPLINE_BENCH_BOOSTER": str(prepared.booster_file)}
        env["LOOPLINE_BENCH_MODEL_VERSION"] = prepared.model_version
        bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
        local = ["--host", "127.0.0.1", "--port"]
        service = start("loopline service", [bentoml_cli, "serve", prepared.bento_tag, *local], env, home, home)
        servers.append(service)
        uvicorn = [sys.executable, "-m", "uvicorn", "bench.bare_fastapi:app", "--workers", "1", "--no-access-log"]
        uvicorn += ["--log-level", "warning", *local]
        bare = start("bare FastAPI", uvicorn, env, PROJECT_ROOT, home)
        servers.append(bare)
        if args.bare_one_thread:
            one = {**env, "LOOPLINE_BENCH_THREADS": "1"}
            servers.append(start("bare FastAPI, 1 thread", uvicorn, one, PROJECT_ROOT, home))
        ready = [server.wait_ready("/readyz") for server in servers]
        print("  ready after " + ", ".join(f"{s.name} {t:.0f} s" for s, t in zip(servers, ready, strict=True)))

        apps = applications(5000)
        diff = _same_scores(service, bare, apps[:200])
        print(f"  same model: max |score difference| between the servers on 200 applications = {diff:.1e}")
        print(f"  in-process per-request cost, {args.repeat} calls per stage ...", flush=True)
        version, booster_file = prepared.model_version, prepared.booster_file
        parts = per_request_cost(booster_file, version, apps[0], home / "parts-log", args.repeat)
        logged_before = _logged_rows(prepared.prediction_log_dir)

        import pandas as pd

        scenarios: list[tuple[str, int]] = [("single", 1)] + ([] if args.no_batch else [("batch-50", BATCH)])
        rows: dict[tuple[str, int], list[Result]] = {}
        for payload, per in scenarios:
            groups = [apps[i : i + per] for i in range(0, len(apps) - per + 1, per)]
            bodies = [json.dumps({"instances": g}).encode() for g in groups]
            in_seconds = min(args.seconds, 5.0)  # one thread, no network: steady after a few seconds
            frames = [pd.DataFrame(g) for g in groups[:500]]
            floor = in_process(prepared.booster_file, frames, per, payload, in_seconds)
            for concurrency in args.concurrency:
                results = [Result(server.name, payload, per, 0.0) for server in servers]
                for server in servers:
                    uvloop_load(server, bodies, concurrency, args.warmup)
                print(
                    f"  {payload}, {concurrency} connections: {args.rounds} rounds of "
                    f"{args.seconds / args.rounds:.1f} s per server, order alternating ...",
                    flush=True,
                )
                for k in range(args.rounds):  # alternate, so a neighbour's burst of load hits both sides alike
                    order = list(zip(servers, results, strict=True))
                    for server, result in order if k % 2 == 0 else order[::-1]:
                        measure(server, bodies, concurrency, args.seconds / args.rounds, result)
                rows[(payload, concurrency)] = [*results, floor]
        served = sum(len(r[0].latencies) * r[0].apps_per_request for r in rows.values())
        logged = _logged_rows(prepared.prediction_log_dir) - logged_before
        processes = (service.processes(), bare.processes())
        for server in servers:  # the file is scored with all cores, alone on the machine
            server.stop()
        batch = None
        if args.batch_rows:
            print(f"  batch scoring a {args.batch_rows:,}-row file ...", flush=True)
            batch, made = batch_file(args.batch_rows, home)
            print(f"    (file generated in {made:.0f} s)", flush=True)

        import psutil

        print(
            f"\nmachine: {psutil.cpu_count()} logical CPUs, shared by the load generator (this process) and the "
            f"server under load (the others idle); load average at the end {os.getloadavg()[0]:.1f}."
        )
        print(
            f"service: `bentoml serve` = {processes[0]} processes (supervisor + API worker); bare: uvicorn, "
            f"{processes[1]} process. 'srv/client/other cores' = CPU seconds per wall second of the server, "
            "the load generator and everything else."
        )
        print(f"service prediction log: {logged} rows written for >= {served} measured applications (+ warm-ups).")
        report_per_request(parts)
        report(rows, args)
        if batch:
            report_batch(batch)
        busiest = max(r.other_cores for results in rows.values() for r in results)
        if busiest > 0.25:
            print(
                f"\nNOTE: other processes used up to {busiest:.2f} of {psutil.cpu_count()} cores during the "
                "measurements: absolute numbers are depressed and noisy; the ratios (same conditions, alternating "
                "rounds) and server CPU ms/req are the more reliable figures. Re-run on an idle machine."
            )
        print(f"\ntotal bench time {time.monotonic() - began:.0f} s")
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
