"""BentoML service for a Loopline model: validated requests, routed champion/canary scoring, metrics, log.

The request schema is generated from ``spec.yaml`` beside this file
(``loopline.serving.request_schema``: strict types, finite numbers, no unknown keys); the model's
derived inputs come from ``features.py`` beside it too (the spec remembers its folder, and
``loopline.core.features`` loads that file, in the repo and inside the Bento); and
``loopline.serving.service_edges`` guards every route before BentoML parses a byte: wrong
content type 415, oversized body 413, unreadable JSON (encoding, syntax, duplicate
key, NaN) 400, a body that does not fit 422 (including a required feature missing),
each answered with the documented ``ErrorBody`` naming the problem. Nothing malformed
reaches a model. With ``LOOPLINE_API_KEYS`` set, a request needs a client's key (401
without one), and the client's name goes into the prediction log with each row. Each
refused request is one WARNING line in the server log and one line in the refusal log
beside the prediction log (``loopline.serving.refusal_log``: reason, field, client, route
revision), which the drift check reads; a categorical input the spec scores when its
level is unknown (``features.unknown_levels``) is scored as missing and flagged in the
answer and the log (``unknown_levels``).

A model with stored features (``features.stored``) has them read per request from the online
store (``loopline.serving.stored``: one ``FeatureStore`` per process, opened and warmed in
``__init__``) by the request's join keys, before the request joins a scoring call; an unknown or
stale key is a 422 naming the key and the view, or scored as missing and flagged
(``stored_missing``), as the spec says per view. The values the model saw go to the log with
the answer; each view's freshness is a gauge (``loopline_feature_age_seconds``).

Scoring is ``loopline.serving.online.RoutedScorer``: the versions and traffic weights
come from the serving state store and change without a restart. Requests
that arrive while the model is busy are scored together in the next call
(``loopline.serving.batching``: natural batching), which is what lets the platform
out-serve a bare endpoint on the same model, without holding a lone request back. Every
prediction goes to the BentoML prediction log with its model version and reason
codes, under a pseudonym of the applicant id, never the id itself.

While the route names a shadow version (a rollout's first phase), each answered batch
is also scored by the shadow on a background thread, after the answer is on its way:
its rows go to the same log with arm ``shadow`` and the answer's prediction id, and to
the same metrics labelled ``arm="shadow"``, with a count of decisions that differ from
the champion's. A shadow failure is logged and counted, never seen by a client; when the
shadow falls behind, batches are left unshadowed (counted) rather than queued without end.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable

with bentoml.importing():
    from loopline.core.pseudonym import pseudonym
    from loopline.core.settings import get_settings
    from loopline.core.spec import ModelSpec, load_spec_file
    from loopline.serving.auth import CLIENT_FIELD, OPEN_CLIENT
    from loopline.serving.batching import NaturalBatcher, Overloaded
    from loopline.serving.log_monitor import PredictionLogMonitor
    from loopline.serving.online import Rows
    from loopline.serving.prediction_log import monitor_name
    from loopline.serving.refusal_log import RefusalLog
    from loopline.serving.request_body import request_body
    from loopline.serving.request_schema import answer_model, answers, application_model, unknown_levels
    from loopline.serving.service_edges import Refusal, protect

# Beside it in a Bento; when served from the repo, LOOPLINE_SERVICE_MODEL_DIR names the model folder.
_BESIDE = Path(__file__).with_name("spec.yaml")
SPEC: ModelSpec = load_spec_file(
    _BESIDE if _BESIDE.exists() else Path(os.environ.get("LOOPLINE_SERVICE_MODEL_DIR", ".")) / "spec.yaml"
)
_PIN = Path(__file__).with_name("bento_model.json")  # written by loopline.serving.packaging into each Bento
_DEV_TAG = os.environ.get("LOOPLINE_BENTO_MODEL", f"{SPEC.name}:latest")  # `bentoml serve` from the repo
MODEL_TAG = json.loads(_PIN.read_text())["tag"] if _PIN.exists() else _DEV_TAG
MAX_BATCH = 1000
MAX_WAIT_SECONDS = 10  # the traffic timeout: a request queued longer is shed with a 503, not left hanging
# Calls at once (natural batching): one more than the cores, so that one call's Python work (features,
# log, answer) runs while the others' booster work (which releases the GIL) keeps every core busy.
SCORING_CALLS = 1 + len(os.sched_getaffinity(0))
CALL_ROWS = 100  # queued requests merge into a call up to this many rows: the per-call cost is paid by then
ALONE_PARALLEL_ROWS = 8  # rows from which a call running alone uses LightGBM's threads (0.5 ms a row here)
FRESHNESS_SECONDS = 60  # how often the stored feature views' age gauges are read again (from the store)
SHADOW_BACKLOG = 8  # batches waiting for the shadow beyond this are not shadowed (loopline_shadow_skipped_total)
log = logging.getLogger(__name__)

Application = application_model(SPEC)
ENTITY = SPEC.dataset.entity_id
NAMES, CATEGORICAL = SPEC.features.names, frozenset(SPEC.features.categorical)
STORED = SPEC.features.stored_columns  # "<view>__<feature>", read from the feature store per request


Prediction = answer_model(SPEC)  # the task's answer: score + decision | prediction | class + probabilities
PredictRequest = request_body(Application, MAX_BATCH)  # {"instances": [...]}; "applications" still read


SCORED_MISSING = bool(SPEC.features.scored_missing_views)  # the answer flags views scored as missing


class StoredRefusal(BentoMLException):
    """A row's key has no (fresh) value in a stored feature view the spec refuses without: 422, naming both."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY


@dataclass(frozen=True)
class _Stored:
    """A validated request row with what the feature store gave for it."""

    application: object
    values: dict[str, float | None]  # "<view>__<feature>" -> value (None: missing)
    missing: list[str]  # views scored as missing (features.stored_missing: missing)


@bentoml.service(name=f"{SPEC.name.replace('_', '-')}", traffic={"timeout": MAX_WAIT_SECONDS})
class ModelService:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import mlflow.lightgbm
        import prometheus_client as prom  # after BentoML has set up multiprocess metrics

        from loopline.core import tracking
        from loopline.core.serving_state import ServingState
        from loopline.serving.online import RoutedScorer

        settings = get_settings()
        self.settings = settings
        tracking.use_store(settings)
        pinned_version = self.bento_model.info.labels.get("mlflow_model_version", "unknown")
        pinned = mlflow.lightgbm.load_model(self.bento_model.path_of("mlflow_model"))
        self.scorer = RoutedScorer(
            SPEC,
            load=lambda version: mlflow.lightgbm.load_model(f"models:/{SPEC.name}/{version}"),
            state=ServingState(settings.state_db_uri),
            pinned_version=pinned_version,
            pinned_booster=pinned,
        )
        self.scorer.refresh()
        self.stored = None  # a model without stored features opens no store
        if STORED:
            from loopline.serving.stored import StoredFeatures

            self.stored = StoredFeatures.open(SPEC, settings)
            self.stored.warm_up()  # before /ready answers: the first request does not pay the store's start-up
        # The join keys logged in clear beside the stored values (the skew check reads the offline store by
        # them); the entity id is never logged, only its pseudonym, and a request feature is logged already.
        self.logged_keys = [
            k for k in (self.stored.key_columns if self.stored else []) if k != ENTITY and k not in NAMES
        ]
        self.secret = settings.pseudonym_secret
        self.prediction_log = PredictionLogMonitor(monitor_name(SPEC.name), str(settings.prediction_log_dir))
        labels = ["model_version", "arm"]  # arm: champion | canary | fallback | shadow (answered nothing)
        self.predictions = prom.Counter("loopline_predictions_total", "Scored rows", [*labels, "decision"])
        self.errors = prom.Counter("loopline_prediction_errors_total", "Failed scoring calls", labels)
        self.latency = prom.Histogram(
            "loopline_predict_latency_seconds",
            "Scoring time per call (a request, or several merged into one call)",
            labels,
        )
        # binary and multiclass: a probability in [0, 1]; regression: the prediction (Prometheus' default buckets)
        buckets = prom.Histogram.DEFAULT_BUCKETS if SPEC.task == "regression" else [i / 20 for i in range(1, 21)]
        self.scores = prom.Histogram(
            "loopline_score", "The answer's score (probability or predicted value)", labels, buckets=buckets
        )
        self.shadow_compared = prom.Counter(
            "loopline_shadow_compared_total", "Rows the shadow decided beside the champion", ["model_version"]
        )
        self.shadow_disagreements = prom.Counter(
            "loopline_shadow_disagreements_total", "Rows whose shadow decision differs from the answer's",
            ["model_version"],
        )  # fmt: skip
        self.shadow_skipped = prom.Counter(
            "loopline_shadow_skipped_total", "Rows not shadowed: the shadow was behind", ["model_version"]
        )
        self.refused = prom.Counter(
            "loopline_refused_requests_total", "Requests answered 4xx, by status and reason", ["status", "reason"]
        )
        self.unknown_levels = prom.Counter(
            "loopline_unknown_levels_total", "Rows scored with a level the model does not know", ["feature"]
        )
        self.stored_missing = prom.Counter(
            "loopline_stored_missing_total", "Rows scored without a view's stored features (unknown key or stale)",
            ["view"],
        )  # fmt: skip
        if self.stored is not None:  # each view's freshness, refreshed on a thread of its own
            self.feature_age = prom.Gauge(
                "loopline_feature_age_seconds",
                "Age of a stored feature view's newest materialised value (+Inf: nothing materialised)",
                ["view"], multiprocess_mode="mostrecent",
            )  # fmt: skip
            self.feature_stale = prom.Gauge(
                "loopline_feature_stale", "1 when a view's newest value is older than two schedule periods",
                ["view"], multiprocess_mode="mostrecent",
            )  # fmt: skip
            self._publish_freshness()
            threading.Thread(
                target=self._watch_freshness, args=(FRESHNESS_SECONDS,), daemon=True,
                name="loopline-freshness",
            ).start()  # fmt: skip
        self._label_series: dict[tuple, object] = {}  # (metric, *label values) -> its series (``_series``)
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-shadow")
        self._shadow_slots = threading.BoundedSemaphore(SHADOW_BACKLOG)
        self.weights = prom.Gauge(
            "loopline_traffic_weight",
            "Share of traffic per arm",
            ["model_version", "arm"],
            multiprocess_mode="mostrecent",
        )
        self._weights_revision: int | None = None
        self._weight_series: set[tuple[str, str]] = set()  # (model_version, arm) pairs ever exported
        self.batcher = NaturalBatcher(
            self._score, max_items=CALL_ROWS, max_wait_seconds=MAX_WAIT_SECONDS, max_calls=SCORING_CALLS
        )
        self._publish_route(self.scorer.route)
        # From here on only the watcher thread changes the route, and it republishes the gauge as it adopts one.
        self.scorer.watch(settings.route_poll_seconds, on_change=self._publish_route)
        global _SERVICE
        _SERVICE = self  # the refusal log records refused requests under this worker's route
        # What start-up made (MLflow, SQLAlchemy, BentoML, the boosters) lives as long as the process: out of
        # the garbage collector's sight, so its full collections do not walk it mid-request (a latency tail).
        gc.freeze()

    @bentoml.api(input_spec=PredictRequest)
    async def predict(self, instances: list[Application]) -> list[Prediction]:  # type: ignore[valid-type]
        """Score rows; requests that arrive while the model is busy are scored in one call.

        Each request is validated on its own first, so a bad one gets its 4xx and never joins
        a call. Merging (``loopline.serving.batching``: natural batching, no timer) pays the
        per-call cost of features and ``pred_contrib`` once for many requests; each row is
        still routed by its own entity id.
        """
        if self.stored is not None:  # looked up per request, so an unknown key refuses this request only
            instances = await asyncio.to_thread(self._with_stored, instances)  # the store's I/O off the loop
        try:
            return await self.batcher.submit(instances)
        except Overloaded as err:
            raise ServiceUnavailable(str(err)) from err

    def _publish_freshness(self) -> None:
        """The age gauges from the store now; a failed read is logged and the gauges keep their last value."""
        from datetime import UTC, datetime

        try:
            for f in self.stored.freshness(datetime.now(UTC)):
                self.feature_age.labels(view=f.view).set(float("inf") if f.age_seconds is None else f.age_seconds)
                self.feature_stale.labels(view=f.view).set(1 if f.stale else 0)
        except Exception:
            log.exception("reading the feature views' freshness failed")

    def _watch_freshness(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self._publish_freshness()

    def _with_stored(self, instances: list) -> list:
        """Each row with its stored features (``_Stored``); a key the rule refuses is this request's 422."""
        from loopline.serving.stored import StoredFeatureRefused

        keys = {
            column: [getattr(a, column, None) for a in instances] for column in self.stored.key_columns
        }  # the entity id or a dataset.keys column of the request
        try:
            looked = self.stored.lookup(keys)
        except StoredFeatureRefused as err:
            raise StoredRefusal(str(err)) from None
        return [
            _Stored(a, {c: looked.columns[c][i] for c in STORED}, looked.missing[i]) for i, a in enumerate(instances)
        ]

    def _score(self, instances: list) -> list:
        """One call: the instances (rows) of every merged request, answered in their order."""
        stored = None
        if self.stored is not None:  # rows of _with_stored: the request and what the store gave for it
            stored = instances
            instances = [s.application for s in stored]
        values = {name: [getattr(a, name) for a in instances] for name in NAMES}
        if stored is not None:
            values.update({c: [s.values[c] for s in stored] for c in STORED})
            values.update({k: [getattr(a, k, None) for a in instances] for k in self.logged_keys})
        rows = Rows.from_values(
            values, [getattr(a, ENTITY) for a in instances], SPEC, self.scorer.features
        )  # column arrays straight from the validated models: no DataFrame per request
        clients = [getattr(a, CLIENT_FIELD) or OPEN_CLIENT for a in instances]
        route = self.scorer.route
        # Alone, a call of a few rows or more gives LightGBM every core; beside another call, one each.
        threads = 0 if self.batcher.in_flight <= 1 and len(rows) >= ALONE_PARALLEL_ROWS else 1
        try:
            result = self.scorer.score(rows, num_threads=threads)
        except Exception:
            self.errors.labels(model_version=str(route.champion_version), arm="champion").inc(len(rows))
            raise
        self._observe(result)
        request_ids = [uuid.uuid4().hex for _ in range(len(rows))]
        missing = None if stored is None else [s.missing for s in stored]
        self._log(result, request_ids, [result.seconds[v] for v in result.versions], clients, missing)
        if result.route.shadow_version:
            self._shadow_later(rows, result, request_ids, clients, missing)
        unknown = unknown_levels(rows.values, SPEC)  # None unless the spec scores unknown levels
        if unknown is not None:
            for feature, count in Counter(f for flagged in unknown for f in flagged).items():
                self.unknown_levels.labels(feature=feature).inc(count)
        if missing is not None:
            for view, count in Counter(v for flagged in missing for v in flagged).items():
                self.stored_missing.labels(view=view).inc(count)
        return answers(result, request_ids, SPEC, Prediction, unknown, missing if SCORED_MISSING else None)

    def _shadow_later(self, rows, result, request_ids: list[str], clients: list[str], missing=None) -> None:
        """Hand the answered rows to the shadow thread; the answer does not wait for it."""
        version = str(result.route.shadow_version)
        if not self._shadow_slots.acquire(blocking=False):
            self.shadow_skipped.labels(model_version=version).inc(len(rows))
            return

        def run() -> None:
            try:
                self._shadow(rows, result, request_ids, clients, missing)
            except Exception:  # the shadow's bookkeeping must not take the worker down either
                log.exception("shadow v%s: bookkeeping failed", version)
            finally:
                self._shadow_slots.release()

        self._shadow_pool.submit(run)

    def _shadow(self, rows, result, request_ids: list[str], clients: list[str], missing=None) -> None:
        shadowed = self.scorer.shadow(rows, result)
        if shadowed is None:
            return
        version, arm = shadowed.version, "shadow"
        self.latency.labels(model_version=version, arm=arm).observe(shadowed.seconds)
        if shadowed.scored is None:
            self.errors.labels(model_version=version, arm=arm).inc(len(rows))
            return
        self._count(shadowed.scored)
        self.shadow_compared.labels(model_version=version).inc(shadowed.compared)
        self.shadow_disagreements.labels(model_version=version).inc(shadowed.disagreements)
        self._log(shadowed.scored, request_ids, [shadowed.seconds] * len(rows), clients, missing)

    def _observe(self, result) -> None:
        """Prometheus, per model version and arm: what the rollout gates and the dashboards read."""
        route = result.route
        arm_of = {str(route.champion_version): "champion", str(route.canary_version): "canary"}
        for version, failed in result.failed.items():
            self.errors.labels(model_version=version, arm="canary").inc(failed)
        for version, seconds in result.seconds.items():
            self._series(self.latency, version, arm_of.get(version, "champion")).observe(seconds)
        self._count(result)

    def _count(self, result) -> None:
        """Answers per (version, arm, decision) and the score histogram: plain loops, cheap for one row."""
        decisions = ("" if d is None else str(d) for d in result.answers.decision)  # regression has no decision
        for (version, arm, decision), count in Counter(
            zip(result.versions, result.arms, decisions, strict=True)
        ).items():
            self._series(self.predictions, version, arm, decision).inc(count)
        for version, arm, score in zip(result.versions, result.arms, result.answers.score.tolist(), strict=True):
            self._series(self.scores, version, arm).observe(score)

    def _series(self, metric, *label_values: str):
        """``metric.labels(*label_values)``, kept: the hot path skips prometheus_client's lookup and lock."""
        key = (metric, *label_values)
        series = self._label_series.get(key)
        if series is None:
            series = self._label_series[key] = metric.labels(*label_values)
        return series

    def _publish_route(self, route) -> None:
        """The traffic-weight gauge shows the route this worker serves (from start, not from the first answer)."""
        if route.revision != self._weights_revision:
            shares = {(str(route.champion_version), "champion"): 1 - route.canary_weight}
            if route.canary_version:
                shares[(route.canary_version, "canary")] = route.canary_weight
            # Multiprocess gauges keep every series they ever had (clear() does not reach the files):
            # versions that left the route are set to 0 rather than left showing their old share.
            for version, arm in self._weight_series - shares.keys():
                self.weights.labels(model_version=version, arm=arm).set(0)
            for (version, arm), share in shares.items():
                self.weights.labels(model_version=version, arm=arm).set(share)
            self._weight_series |= shares.keys()
            self._weights_revision = route.revision

    def _log(self, result, request_ids: list[str], seconds: list[float], clients: list[str], missing=None) -> None:
        """One prediction-log row per application (a BentoML monitor, JSON lines), with the API client's name.

        With stored features, the values the model saw (``<view>__<feature>``), the join keys they were
        read by (except the entity id, which is logged only as its pseudonym) and the views scored as missing.
        """
        rows, answered = result.rows, result.answers
        feature, prediction, categorical, numerical = "feature", "prediction", "categorical", "numerical"
        columns = [  # (name, values, role, type), as BentoML's monitors take them
            ("prediction_id", request_ids, feature, categorical),  # BentoML has no such role
            ("entity_hash", [pseudonym(e, self.secret) for e in rows.entities], feature, categorical),
            *((name, rows.values[name], feature, categorical if name in CATEGORICAL else numerical) for name in NAMES),
            ("model_version", result.versions, feature, categorical),
            ("arm", result.arms, feature, categorical),
            ("score", answered.score.tolist(), prediction, numerical),
            ("decision", answered.decision.tolist(), prediction, categorical),
            ("reasons", [",".join(r) for r in answered.reasons], prediction, categorical),
            ("latency_seconds", seconds, feature, numerical),  # its model version's scoring time
            ("client", clients, feature, categorical),  # whose API key sent it (never the key)
            ("route_revision", [result.route.revision] * len(rows), feature, numerical),  # the route that served it
            ("logged_at", [time.time()] * len(rows), feature, numerical),  # UTC epoch: what windows select on
        ]
        unknown = unknown_levels(rows.values, SPEC)
        if unknown is not None:  # the inputs scored as unknown levels (features.unknown_levels: score)
            columns.append(("unknown_levels", [",".join(f) for f in unknown], feature, categorical))
        if missing is not None:  # stored features: what the model saw, and by which keys (for trace and skew)
            columns.extend((name, rows.values[name], feature, numerical) for name in STORED)
            columns.extend((key, rows.values[key], feature, categorical) for key in self.logged_keys)
            columns.append(("stored_missing", [",".join(v) for v in missing], feature, categorical))
        self.prediction_log.write(columns)

    @bentoml.api(route="/ready")
    def ready(self) -> dict:
        route = self.scorer.route
        return {"ready": True, "model": SPEC.name, "route": route.to_dict()}


_settings = get_settings()
_SERVICE: ModelService | None = None  # this worker's service, once started
_REFUSALS = RefusalLog(_settings.prediction_log_dir, SPEC)


def record_refusal(refusal: Refusal) -> None:
    """A request answered 4xx: into the refusal log beside the prediction log, and counted by reason."""
    service = _SERVICE
    line = _REFUSALS.record(refusal, service.scorer.route.revision if service is not None else None)
    if service is not None:
        service.refused.labels(status=str(refusal.status), reason=line["reason"]).inc()


@functools.cache
def _serving_state():
    from loopline.core.serving_state import ServingState

    return ServingState(_settings.state_db_uri)  # one engine for the process, not one per /docs.json


def serving_now() -> str:
    """What answers requests right now, from the serving state (not the Bento's pinned model)."""
    route = _serving_state().route(SPEC.name)
    canary = f", canary v{route.canary_version} at {route.canary_weight:.0%}" if route.canary_version else ""
    shadow = f", shadow v{route.shadow_version} (scores a copy, answers nothing)" if route.shadow_version else ""
    return f"champion v{route.champion_version}{canary}{shadow}"


protect(
    ModelService,
    max_body_bytes=_settings.max_request_bytes,
    api_keys=_settings.api_keys,
    require_keys=_settings.require_api_keys,
    describe=serving_now,
    on_refusal=record_refusal,
)
