"""The model spec (``models/<name>/spec.yaml``): schema, training recipe and gates of one model.

Validated strictly on load, so a typo in a spec fails loudly with the key's path
instead of silently falling back to a default.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from loopline.core.errors import LooplineError
from loopline.core.tasks import TASKS, TaskName


class SpecError(LooplineError, ValueError):
    """The spec file is missing or invalid; the message names the file and the key."""


# A stored feature, as Feast references it: "<view>:<feature>" (loopline.features.definitions).
_FEATURE_REF = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")

# A key column (dataset.keys): the form of a join key in the feature repo (loopline.features.definitions.NAME).
_COLUMN = re.compile(r"^[a-z][a-z0-9_]*$")

_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def _check_schedule(value: str) -> str:
    """A cron expression or one of Airflow's presets; checked here so a typo fails this spec, not every DAG."""
    from croniter import croniter

    if value not in _PRESETS and not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression (e.g. '0 3 * * 1') or one of {_PRESETS}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericRange(_Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> NumericRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class IngestRules(_Strict):
    """Data rules checked at ingest beside the GE suite, against the batch and the whole dataset.

    Every data version is cumulative, so a key that repeats across batches would break
    every later version; a timestamp in the future would empty the time-based holdout.
    """

    unique_key: list[str] | None = None  # columns unique across the whole dataset; default: [entity_id]
    on_duplicate: Literal["reject", "drop_repeats", "keep_latest"] = "reject"
    earliest_timestamp: date = date(1970, 1, 1)  # older rows are implausible
    future_tolerance_minutes: float = Field(60, ge=0)  # rows stamped later than ingest time + this are refused


class SourceSpec(_Strict):
    """Where a model's batches come from: files dropped in its landing folder, or slices of a SQL table."""

    kind: Literal["files", "sql"] = "files"
    url_env: str | None = None  # environment variable holding a SQLAlchemy URL (sql)
    conn_id: str | None = None  # ... or an Airflow connection id (sql)
    table: str | None = None  # a table ("schema.table" allowed) ...
    query: str | None = None  # ... or a SELECT; the watermark filter is put around it
    watermark: str | None = None  # a column that only grows as rows are added; default: dataset.timestamp
    max_rows: int = Field(1_000_000, ge=1)  # rows per slice: a large backlog arrives in several batches

    @model_validator(mode="after")
    def _sql_needs(self) -> SourceSpec:
        if self.kind == "sql":
            if not (self.url_env or self.conn_id):
                raise ValueError("a sql source needs url_env (an environment variable) or conn_id")
            if bool(self.table) == bool(self.query):
                raise ValueError("a sql source needs exactly one of table or query")
        elif any((self.url_env, self.conn_id, self.table, self.query, self.watermark)):
            raise ValueError("url_env, conn_id, table, query and watermark apply to kind: sql only")
        return self


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    entity_id: str
    timestamp: str
    target: str
    # Columns carried in the model's data and in every request that are not model features: the join keys of
    # the stored features it uses (e.g. card_id, merchant_id), like entity_id never seen by the model.
    keys: list[str] = Field(default_factory=list)
    classes: list[str] | None = None  # multiclass: the target's values, in the order probabilities are given
    expectation_suite: str
    rules: IngestRules = Field(default_factory=IngestRules)
    source: SourceSpec = Field(default_factory=SourceSpec)

    @model_validator(mode="after")
    def _key_columns(self) -> DatasetSpec:
        key = self.rules.unique_key
        if key is not None and (not key or len(set(key)) != len(key)):
            raise ValueError(f"rules.unique_key must list distinct columns, got {key}")
        bad = [k for k in self.keys if not isinstance(k, str) or not _COLUMN.match(k)]
        if bad:
            raise ValueError(f"keys: {bad} are not column names (lower case letters, digits and _)")
        twice = sorted({k for k in self.keys if self.keys.count(k) > 1})
        if twice:
            raise ValueError(f"keys: listed twice: {twice}")
        roles = {self.entity_id: "entity_id", self.timestamp: "timestamp", self.target: "target"}
        clash = [f"{k} (the {roles[k]})" for k in self.keys if k in roles]
        if clash:
            raise ValueError(f"keys: {', '.join(clash)} already has a role in the dataset; keys are extra columns")
        return self

    @property
    def unique_key(self) -> list[str]:
        return list(self.rules.unique_key or [self.entity_id])


class FeatureSpec(_Strict):
    version: str
    numeric: dict[str, NumericRange]
    categorical: dict[str, list[str]]
    # What a prediction request must send: these features present and not null (else a 422 naming them) ...
    required: list[str] = Field(default_factory=list)
    # ... and at most this share of all features missing (null or absent) in one request row.
    max_missing_share: float | None = Field(None, ge=0, le=1)
    # Per categorical input, what the service does with a level not listed: refuse the request (422, the
    # default) or score it as unknown (missing, as LightGBM sees it), flagged in the answer and the log.
    unknown_levels: dict[str, Literal["refuse", "score"]] = Field(default_factory=dict)
    # Features read from the feature store, as Feast references "<view>:<feature>" (feature_repo/*.yaml);
    # the model sees each as the column "<view>__<feature>". Checked against the definitions by
    # loopline.features.definitions.check_model_uses; here only their form.
    stored: list[str] = Field(default_factory=list)
    # Per view of ``stored``, what the service does when the store has no value for a row's key (an unknown
    # entity) or only one older than the view's ttl: refuse the request (422 naming the key and the view, the
    # default: a model trained on the feature should not silently score without it) or score the view's
    # features as missing (NaN, as LightGBM sees missing), flagged in the answer and the log (``stored_missing``).
    stored_missing: dict[str, Literal["refuse", "missing"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _disjoint(self) -> FeatureSpec:
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"features both numeric and categorical: {sorted(both)}")
        unknown = [name for name in self.required if name not in self.names]
        if unknown or len(set(self.required)) != len(self.required):
            raise ValueError(f"required must list distinct features of this spec; unknown: {unknown}")
        for name, levels in self.categorical.items():
            if not levels or len(set(levels)) != len(levels):
                raise ValueError(f"categorical feature {name!r} needs distinct, non-empty levels")
        not_categorical = sorted(set(self.unknown_levels) - set(self.categorical))
        if not_categorical:
            raise ValueError(f"unknown_levels names features that are not categorical: {not_categorical}")
        return self

    @field_validator("stored")
    @classmethod
    def _feature_refs(cls, refs: list[str]) -> list[str]:
        for i, ref in enumerate(refs):
            if not isinstance(ref, str) or not _FEATURE_REF.match(ref):
                raise ValueError(
                    f"item {i}, {ref!r}, is not a feature reference view:feature (e.g. card_activity:spend_1h)"
                )
        twice = sorted({r for r in refs if refs.count(r) > 1})
        if twice:
            raise ValueError(f"features named twice: {twice}")
        return refs

    @model_validator(mode="after")
    def _stored_apart(self) -> FeatureSpec:
        clash = sorted(set(self.stored_columns) & set(self.names))
        if clash:
            raise ValueError(f"stored: the columns {clash} are also request-time features of this spec")
        unused = sorted(set(self.stored_missing) - set(self.stored_views))
        if unused:
            raise ValueError(f"stored_missing names views that no stored feature reads: {unused}")
        return self

    @property
    def stored_views(self) -> list[str]:
        """The views ``stored`` reads, in first-use order."""
        return list(dict.fromkeys(ref.split(":", 1)[0] for ref in self.stored))

    @property
    def scored_missing_views(self) -> list[str]:
        """The views whose missing or stale values are scored as missing (and flagged) rather than refused."""
        return [v for v in self.stored_views if self.stored_missing.get(v) == "missing"]

    @property
    def stored_columns(self) -> list[str]:
        """The columns stored features arrive as: ``<view>__<feature>`` (Feast's full feature names)."""
        return [ref.replace(":", "__", 1) for ref in self.stored]

    @property
    def scored_unknown(self) -> dict[str, frozenset[str]]:
        """The categorical inputs whose unknown levels are scored (as missing) rather than refused: their levels."""
        return {
            name: frozenset(levels)
            for name, levels in self.categorical.items()
            if self.unknown_levels.get(name) == "score"
        }

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class DecisionLabels(_Strict):
    """What the service answers for a score below the threshold, and at or above it."""

    below: str = Field("negative", min_length=1)
    at_or_above: str = Field("positive", min_length=1)


class TrainingSpec(_Strict):
    schedule: str = "0 3 * * 1"  # cron (UTC) of the scheduled retrain; new data versions also trigger one

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))
    valid_weeks: int = Field(ge=1)
    holdout_weeks: int = Field(ge=1)
    min_train_rows: int = Field(ge=1)
    decision_threshold: float | None = Field(None, gt=0, lt=1)  # binary: score >= threshold -> at_or_above
    decisions: DecisionLabels = Field(default_factory=DecisionLabels)
    seed: int
    early_stopping_rounds: int = Field(ge=1)
    params: dict[str, Any]
    # Classifiers: holdout expected calibration error above which an isotonic map is fitted on the
    # validation split for the label-free quality estimate (served scores are never changed).
    max_calibration_error: float = Field(0.05, gt=0, lt=1)


class CanaryGates(_Strict):
    """Canary vs champion over the same window; a step passes only if every gate with enough data passes."""

    # Predictions per arm in the step's window before judging; below ~100 the score PSI of two
    # samples of one distribution is too noisy to compare with max_score_psi.
    min_samples: int = Field(200, ge=100)
    max_error_rate: float = Field(0.01, ge=0, le=1)  # canary errors / canary calls
    max_p95_latency_ratio: float = Field(2.0, ge=1)  # canary p95 <= ratio * champion p95 + slack
    latency_slack_ms: float = Field(5.0, ge=0)  # absolute slack: sub-millisecond noise never fails a step
    max_score_psi: float = Field(0.2, gt=0)  # canary vs champion score PSI, on top of the expected (gate) PSI
    # Live quality, once outcome labels have arrived: how much worse the canary's live metric may be
    # than the champion's, in that metric's units (binary: AUC; multiclass: accuracy; regression: sMAPE).
    max_quality_drop: float = Field(0.03, ge=0)
    min_labelled: int = Field(200, ge=1)  # labelled predictions per arm before the AUC gate counts
    # Shadow phase: the share of compared rows whose decision (binary: approve/decline; multiclass:
    # the class) differs from the champion's answer on the same row. A retrained model rightly decides
    # some borderline rows differently (after the shift in `make simulate`, about 12 %); a broken or
    # inverted model disagrees on a third of the rows or more: that is what this bound stops.
    max_disagreement: float = Field(0.25, ge=0, le=1)


class RolloutSpec(_Strict):
    mode: str = Field("canary", pattern="^(canary|bluegreen)$")
    steps: list[float] = Field(default_factory=lambda: [0.05, 0.2, 0.5, 1.0])  # canary share per step
    # Canary mode: before the first step the candidate scores a copy of every request without answering
    # it (shadow), judged like a step against the champion's answers on the same rows. This long at
    # least (default: bake_seconds); 0: no shadow phase. Blue/green has its pre-switch check instead.
    shadow_seconds: int | None = Field(None, ge=0)
    bake_seconds: int = Field(600, ge=1)  # minimum time per step before it can pass
    max_step_seconds: int = Field(3600, ge=1)  # a step without enough traffic by then fails (nothing judged)
    poll_seconds: int = Field(30, ge=1)
    gates: CanaryGates = Field(default_factory=CanaryGates)

    @model_validator(mode="after")
    def _steps(self) -> RolloutSpec:
        steps = self.steps
        if not steps or any(not 0 < s <= 1 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 1.0:
            raise ValueError(f"steps must rise strictly within (0, 1] and end at 1.0, got {steps}")
        if self.max_step_seconds < self.bake_seconds:
            raise ValueError("max_step_seconds must be >= bake_seconds")
        if self.max_step_seconds < self.shadow_bake_seconds:
            raise ValueError(
                f"shadow_seconds ({self.shadow_seconds}) must be <= max_step_seconds ({self.max_step_seconds}): "
                "the shadow phase is judged within the same time limit as a step"
            )
        return self

    @property
    def shadow_bake_seconds(self) -> int:
        """How long the shadow phase runs at least; 0: the rollout has none."""
        return self.bake_seconds if self.shadow_seconds is None else self.shadow_seconds


# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
_IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


class RuntimeSpec(_Strict):
    """Where the model's heavy tasks run: an image on the container engine (loopline.core.runtime).

    Without a ``runtime`` section they run in the Airflow worker's own process (the embedded default).
    The image must already be on the engine (``make image``): Loopline never pulls one.
    """

    image: str  # e.g. loopline:local (make image), localhost/loopline:local, registry:5000/team/loopline:1.4

    @field_validator("image")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _IMAGE_REF.match(value) or len(value) > 255:
            raise ValueError(
                f"{value!r} is not an image reference; use [registry[:port]/]name[:tag][@sha256:digest] with a"
                " lower-case name, e.g. loopline:local or localhost/loopline:local"
            )
        return value


# The verdicts that can alert or retrain (loopline.monitoring.verdicts); output_shift: the answers moved while the
# quality is estimated to hold (before it, such windows were performance_risk).
AlertingVerdict = Literal["feature_drift", "output_shift", "performance_risk", "concept_drift"]


class DriftPolicy(_Strict):
    """What a drift check judges, what each verdict does, and how often it may start a retrain."""

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "drift_share" in data:
            import logging

            logging.getLogger(__name__).warning(
                "monitoring.drift_share is ignored: one drifted input is now a feature_drift (alert only), and"
                " a retrain follows the estimated impact on the model (performance_risk); remove the key"
            )
            data = {k: v for k, v in data.items() if k != "drift_share"}
        return data

    schedule: str = "@hourly"  # the drift DAG's schedule

    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))
    window_hours: float = Field(24, gt=0)  # recent prediction-log window compared with the reference
    min_window: int = Field(500, ge=10)  # fewer live rows than this: no verdict (onboarding scales it to the table)
    p_value: float = Field(0.05, gt=0, lt=1)  # FDR level across features (TabularDrift, correction='fdr')
    # A significant input counts as drifted only with an effect size beyond a floor that knows the window's size
    # (loopline.monitoring.detection): numeric, the shift in reference SDs (normalised Wasserstein distance) must
    # reach min_shift and noise_multiple x what sampling noise gives at this window size; categorical, the PSI
    # over the levels must reach min_psi and noise_multiple x PSI's expectation under no shift.
    min_shift: float = Field(0.05, gt=0)  # numeric inputs: a move below this many SDs is never worth an alert
    min_psi: float = Field(0.1, gt=0)  # categorical inputs: the PSI a significant change must also reach
    noise_multiple: float = Field(3.0, ge=1)  # effect sizes must also be this many times their no-shift expectation
    score_psi: float = Field(0.2, gt=0)  # score-distribution PSI that confirms on its own (with p < p_value)
    min_labelled: int = Field(300, ge=10)  # labelled live rows before live quality is judged
    # Live quality worse than the holdout's by more than this, and than sampling noise gives at the window's
    # labelled rows (at one-sided p_value): concept drift (the task's live metric: binary AUC, multiclass
    # accuracy, regression sMAPE).
    max_quality_drop: float = Field(0.05, ge=0)
    # Outcomes that moved away from the predictions (a base rate, a class's share, the mean outcome), significant at
    # p_value and beyond this (absolute; regression: a share of the mean |outcome|): concept drift.
    max_outcome_shift: float = Field(0.05, gt=0)
    # The impact on the model (loopline.monitoring.impact): estimated quality before labels, and the answers' mix.
    max_estimated_drop: float = Field(0.05, ge=0)  # estimated live metric worse than on unseen rows by more: at risk
    max_mix_shift: float = Field(0.08, gt=0, le=1)  # a decision's / class's share moved by more (absolute): at risk
    max_quantile_shift: float = Field(0.15, gt=0)  # a prediction quantile moved by more x the 10-90% range: at risk
    # What each verdict does: alert people, start a retrain (within cooldown and weekly budget).
    alert_on: list[AlertingVerdict] = Field(
        default_factory=lambda: ["feature_drift", "output_shift", "performance_risk", "concept_drift"]
    )
    retrain_on: list[AlertingVerdict] = Field(default_factory=lambda: ["performance_risk", "concept_drift"])
    # Requests refused (422 ...) or inputs scored as an unknown level, as a share of every row received in the
    # window: at or above this, an alert of its own (loopline.monitoring.refusals), whatever the verdict.
    max_refused_share: float = Field(0.05, gt=0, le=1)
    # Stored features (features.stored): the share of sampled served rows whose online value differs from the
    # offline point-in-time value for the same key and time (loopline.monitoring.skew); above it, an alert
    # naming the view, the feature and the pipeline DAG that writes it.
    max_feature_skew: float = Field(0.01, ge=0, le=1)
    skew_sample: int = Field(500, ge=10)  # served rows compared per check (the newest of the window)
    min_consecutive_windows: int = Field(1, ge=1)  # a retrain needs this many checks in a row with such a verdict
    reminder_hours: float = Field(24, gt=0)  # an episode (the same verdict, check after check) alerts again after this
    cooldown_hours: float = Field(24, ge=0)  # no retrain trigger within this long after the last one
    max_retrains_per_week: int = Field(2, ge=0)


class ModelSpec(_Strict):
    name: str
    description: str = ""
    task: TaskName = "binary"
    dataset: DatasetSpec
    features: FeatureSpec
    training: TrainingSpec
    # Keys made of the task's holdout metrics: min_<m> / max_<m> floors and ceilings (which one
    # depends on which way m is better) and <m>_tolerance (not worse than the champion by more).
    quality_gate: dict[str, float]
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    monitoring: DriftPolicy = Field(default_factory=DriftPolicy)
    # An image to run training (and batch scoring) in, through the Docker provider; None: in-process.
    runtime: RuntimeSpec | None = None
    # The folder the spec was read from: the model's own code (features.py) lives beside it.
    _model_dir: Path | None = PrivateAttr(None)

    @property
    def model_dir(self) -> Path | None:
        """``models/<name>/`` (or the Bento's service folder); None for a spec built in memory."""
        return self._model_dir

    def in_folder(self, model_dir: Path) -> ModelSpec:
        """This spec, read as if from ``model_dir`` (whose features.py it then uses)."""
        copy = self.model_copy()
        copy._model_dir = Path(model_dir)
        return copy

    @model_validator(mode="after")
    def _keys_not_features(self) -> ModelSpec:
        clash = sorted(set(self.dataset.keys) & {*self.features.names, *self.features.stored_columns})
        if clash:
            raise ValueError(
                f"dataset.keys: {clash} are also features; a key is carried beside the features, never one of them"
            )
        return self

    @model_validator(mode="after")
    def _key_in_columns(self) -> ModelSpec:
        unknown = [c for c in self.dataset.unique_key if c not in self.input_columns]
        if unknown:
            raise ValueError(f"dataset.rules.unique_key names columns the dataset does not have: {unknown}")
        return self

    @model_validator(mode="after")
    def _fits_the_task(self) -> ModelSpec:
        task = TASKS[self.task]
        problems = task.gate_problems(self.quality_gate)
        objective = self.training.params.get("objective", task.objectives[0])
        if objective not in task.objectives:
            problems.append(
                f"training.params.objective {objective!r} does not fit task {self.task};"
                f" use one of {list(task.objectives)}"
            )
        if "num_class" in self.training.params:
            problems.append("training.params.num_class is set by the platform from dataset.classes")
        classes = self.dataset.classes
        if self.task == "multiclass":
            if not classes or len(classes) < 3 or len(set(classes)) != len(classes):
                problems.append(
                    "dataset.classes: a multiclass model needs at least 3 distinct classes (2 classes: task binary)"
                )
        elif classes is not None:
            problems.append(f"dataset.classes applies to task multiclass only (this model is {self.task})")
        if self.task == "binary" and self.training.decision_threshold is None:
            problems.append(
                "training.decision_threshold: a binary model needs one (score >= threshold: decisions.at_or_above)"
            )
        if self.task != "binary" and self.training.decision_threshold is not None:
            problems.append(f"training.decision_threshold applies to task binary only (this model is {self.task})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def input_columns(self) -> list[str]:
        """Columns of a raw batch, in order: id, time, keys, features, label."""
        ds = self.dataset
        return [ds.entity_id, ds.timestamp, *ds.keys, *self.features.names, ds.target]


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys a spec section takes, found by walking the models along the error's path."""
    model: Any = ModelSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            break
        inner = field.annotation
        model = next((a for a in getattr(inner, "__args__", ()) if hasattr(a, "model_fields")), inner)
    return sorted(getattr(model, "model_fields", {}))


def _explain(error: dict) -> str:
    where = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key; allowed here: {', '.join(_allowed_keys(error['loc'][:-1]))}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def spec_path(model_name: str, models_dir: Path) -> Path:
    return models_dir / model_name / "spec.yaml"


# libyaml's loader when PyYAML has it (the wheels do): the same safe YAML, about 7x faster than the
# pure-Python one, which matters because every DAG file parse reads every model's spec.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec_file(path: Path) -> ModelSpec:
    """Parse and validate one spec file (the service inside a Bento reads its copy this way)."""
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)  # CSafeLoader/SafeLoader: safe
        spec = ModelSpec.model_validate(raw)
        spec._model_dir = path.parent
        return spec
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read spec {path}: {err}") from err
    except yaml.YAMLError as err:
        where = " ".join(str(err).split())  # libyaml's message spans lines; the error is one line everywhere
        raise SpecError(f"{path} is not valid YAML: {where}") from err
    except ValidationError as err:
        problems = "; ".join(_explain(e) for e in err.errors())
        raise SpecError(f"{path} is invalid: {problems}") from err


def load_spec(model_name: str, models_dir: Path) -> ModelSpec:
    """The validated spec of ``models/<model_name>/``, read once per process while the file is unchanged.

    Each DAG file in ``dags/`` asks for every model's spec, so one parse of the folder asks
    (stations + 1) times per model. The cache is keyed on the file's mtime and size, so an edited
    spec is read again, and holds every model (a bounded LRU smaller than the number of models
    would miss on every call of a sorted walk over the folders).
    """
    path = spec_path(model_name, models_dir)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is None or not path.is_file():
        known = sorted(p.parent.name for p in models_dir.glob("*/spec.yaml"))
        raise SpecError(f"no spec for model {model_name!r} at {path}; known models: {known}")
    return _load_spec_cached(model_name, Path(models_dir), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1024)
def _load_spec_cached(model_name: str, models_dir: Path, mtime_ns: int, size: int) -> ModelSpec:
    path = spec_path(model_name, models_dir)
    spec = load_spec_file(path)
    if spec.name != model_name:
        raise SpecError(f"{path} declares name {spec.name!r}, expected {model_name!r}")
    return spec


load_spec.cache_clear = _load_spec_cached.cache_clear  # type: ignore[attr-defined]
