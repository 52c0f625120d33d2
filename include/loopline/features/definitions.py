"""Feature definitions as a contract: entities and feature views declared in ``feature_repo/*.yaml``.

A team declares, in one YAML file of the feature repo (one per owning team, or one per view),
the **entities** its features are keyed on and the **feature views** it owns: where a view's
events come from, how its features are computed from them, how long a value stays valid and
how often the view is recomputed. Models name the stored features they use in their
``spec.yaml`` (``features.stored: [view:feature, ...]``); ``check_model_uses`` holds a spec
against these definitions.

This module is the contract only: no Feast import, nothing computed. The next step turns each
definition 1:1 into a Feast object (Feast 0.67):

=====================================  ======================================================
here (YAML)                            Feast
=====================================  ======================================================
entity ``name``                        ``feast.Entity(name=...)``
entity ``join_key``                    ``Entity(join_keys=[join_key])`` (one key per entity)
entity ``value_type`` int64 | string   ``Entity(value_type=ValueType.INT64 | ValueType.STRING)``
entity ``description``                 ``Entity(description=...)``
view ``name``                          ``feast.FeatureView(name=...)``
view ``entities``                      ``FeatureView(entities=[Entity, ...])``
view ``ttl`` (e.g. ``7d``)             ``FeatureView(ttl=timedelta(days=7))``: the point-in-time
                                       join and the online read ignore older values
view ``owner``                         ``FeatureView(owner=...)``
view ``description`` / ``tags``        ``FeatureView(description=..., tags={...})``
view ``online``                        ``FeatureView(online=...)``: materialised or not
view features, each ``dtype``          ``FeatureView(schema=[Field(name, dtype)])``, dtypes from
                                       ``feast.types``: int64 -> Int64, float64 -> Float64,
                                       string -> String, bool -> Bool,
                                       unix_timestamp -> UnixTimestamp
the view's computed rows               ``FileSource(path=<offline store>/<view>.parquet,
                                       timestamp_field=<source.event_time>,
                                       created_timestamp_column="created")``: the feature
                                       pipeline writes them; ``feature_store.yaml`` has
                                       ``offline_store: {type: file}`` and ``online_store:
                                       {type: sqlite}`` (embedded) or ``{type: redis}`` (stack)
view ``schedule``, ``source``,         Loopline's own (Feast does not compute features): the
features' ``agg``/``of``/``window``,   feature pipeline DAG's schedule, its event source (a
view ``compute``                       DVC-registry dataset, or a SQL table read through
                                       ``loopline.ingestion.sql_source``) and the computation
a model's ``features.stored``          the feature references ``get_historical_features`` and
``[view:feature]``                     ``get_online_features`` take; the model sees the column
                                       ``view__feature`` (Feast's ``full_feature_names=True``),
                                       so two views may both have a ``count_1h``
=====================================  ======================================================

How a view's features are computed, one of two ways per view:

- **declared window aggregates** over the source's events, per entity key, as of each event
  time: ``{name: spend_1h, agg: sum, of: amount, window: 1h}``; ``agg`` is sum, mean, min,
  max, count (no ``of``: events counted) or last (the latest value of ``of``, no window; the
  view's TTL bounds its age). Their dtype follows from ``agg`` (count: int64, last: given).
- **a small pure function** in the feature repo (``compute: card_features.py:compute``), like a
  model's own ``features.py``: events in, one row per entity key and event time out; each
  feature then gives its ``dtype``. Loading checks the file and that it defines the function
  (by reading it, never importing it).

Loading is strict and per file (``load_definitions``): unknown keys are refused, each error names
the file and the field (``feature_repo/cards.yaml: feature_views[0].ttl: ...``), and a broken file
is left out whole while every other file's definitions still load, as a broken model folder is
left out of the line (``loopline.core.dag_factory.discover``). A name defined twice across files
is refused in both, naming both files: neither definition silently wins. A view whose entity is
unknown is refused.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loopline.core.errors import LooplineError
from loopline.core.spec import _YAML_LOADER, ModelSpec, SourceSpec, _check_schedule

NAME = r"^[a-z][a-z0-9_]*$"
_DURATION = re.compile(r"^([1-9][0-9]*)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COMPUTE_REF = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_/-]*\.py):([A-Za-z_][A-Za-z0-9_]*)$")
# A model's reference to a stored feature, Feast's own form: "<view>:<feature>".
FEATURE_REF = re.compile(r"^([a-z][a-z0-9_]*):([a-z][a-z0-9_]*)$")

Dtype = Literal["int64", "float64", "string", "bool", "unix_timestamp"]
# The feast.types name of each dtype (the next step's mapping; kept here so it is tested with the contract).
FEAST_TYPES: dict[str, str] = {
    "int64": "Int64",
    "float64": "Float64",
    "string": "String",
    "bool": "Bool",
    "unix_timestamp": "UnixTimestamp",
}
_AGG_DTYPE = {"sum": "float64", "mean": "float64", "min": "float64", "max": "float64", "count": "int64"}


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d``, ``2w``: a positive whole number and one unit."""
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a duration; write a whole number and a unit, e.g. 30m, 1h, 7d, 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _duration(value: Any) -> str:
    """A duration field's text, checked (the field keeps what the team wrote: ``7d``, not 604800)."""
    parse_duration(value)
    return value


class DefinitionError(LooplineError, ValueError):
    """A feature definition or a model's use of one is refused; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityDef(_Strict):
    name: str = Field(pattern=NAME)
    join_key: str = Field(pattern=NAME)  # the column that carries the key, in the source and in a model's data
    value_type: Literal["int64", "string"]
    description: str = ""


class SqlSourceDef(_Strict):
    """A table (or SELECT) read in watermark slices through ``loopline.ingestion.sql_source``."""

    url_env: str | None = None
    conn_id: str | None = None
    table: str | None = None
    query: str | None = None
    watermark: str | None = None  # default: the view's source.event_time
    max_rows: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _as_sql_source(self) -> SqlSourceDef:
        try:
            self.as_source_spec()  # the same rules as a model's sql source, one implementation
        except ValidationError as err:
            raise ValueError("; ".join(_explain(e) for e in err.errors())) from None
        return self

    def as_source_spec(self) -> SourceSpec:
        return SourceSpec(kind="sql", **self.model_dump())


class SourceDef(_Strict):
    """The events a view is computed from: a dataset of the DVC data registry, or a SQL table."""

    dataset: str | None = Field(None, pattern=r"^[a-z0-9_]+$")  # data/<dataset>/ in the data registry
    sql: SqlSourceDef | None = None
    event_time: str = Field(pattern=NAME)  # when each event happened: the point-in-time axis
    created_time: str | None = Field(None, pattern=NAME)  # when it was recorded (a later correction wins)

    @model_validator(mode="after")
    def _one_source(self) -> SourceDef:
        if (self.dataset is None) == (self.sql is None):
            raise ValueError("a source needs exactly one of dataset (a data registry dataset) or sql (a table)")
        return self


class FeatureDef(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    agg: Literal["sum", "mean", "min", "max", "count", "last"] | None = None
    of: str | None = Field(None, pattern=NAME)  # the source column aggregated
    window: str | None = None  # e.g. 1h, 30d: events in (t - window, t]
    dtype: Dtype | None = None  # required with last and with a view's compute; implied by the other aggs

    _window = field_validator("window", mode="before")(classmethod(lambda cls, v: v if v is None else _duration(v)))

    @model_validator(mode="after")
    def _shape(self) -> FeatureDef:
        if self.agg is None:
            if self.of is not None or self.window is not None:
                raise ValueError("of and window belong to an aggregate; add agg (sum, mean, min, max, count, last)")
            return self
        if self.agg != "count" and self.of is None:
            raise ValueError(f"agg {self.agg} needs of: the source column it aggregates")
        if self.agg == "last":
            if self.window is not None:
                raise ValueError("agg last takes no window (the view's ttl bounds how old the value may be)")
            if self.dtype is None:
                raise ValueError("agg last needs a dtype (the type of the column it keeps)")
        else:
            if self.window is None:
                raise ValueError(f"agg {self.agg} needs a window, e.g. 1h or 30d")
            implied = _AGG_DTYPE[self.agg]
            if self.dtype is not None and self.dtype != implied:
                raise ValueError(f"agg {self.agg} gives {implied}, not {self.dtype}; leave dtype out")
        return self

    @property
    def feast_dtype(self) -> str:
        """The feast.types name of this feature's type."""
        return FEAST_TYPES[self.dtype or _AGG_DTYPE[self.agg or ""]]

    @property
    def window_delta(self) -> timedelta | None:
        return None if self.window is None else parse_duration(self.window)


class FeatureViewDef(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    owner: str = Field(min_length=1)  # the owning team, shown on the Loopline page and in alerts
    entities: list[str] = Field(min_length=1)
    ttl: str  # a value older than this is not joined to a training row nor served
    schedule: str  # the feature pipeline's cron or preset; new source data also triggers it
    source: SourceDef
    online: bool = True  # materialised into the online store for serving
    compute: str | None = None  # "file.py:function" in the feature repo; None: every feature is an aggregate
    features: list[FeatureDef] = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=dict)

    _ttl = field_validator("ttl", mode="before")(classmethod(lambda cls, v: _duration(v)))
    _schedule = field_validator("schedule")(classmethod(lambda cls, v: _check_schedule(v)))

    @field_validator("compute")
    @classmethod
    def _compute_ref(cls, value: str | None) -> str | None:
        if value is not None and (not _COMPUTE_REF.match(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r} is not file.py:function (a file of the feature repo and a function in it)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureViewDef:
        names = [f.name for f in self.features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"features named twice: {twice}")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError(f"entities listed twice: {self.entities}")
        for i, feature in enumerate(self.features):
            where = f"features[{i}] ({feature.name})"
            if self.compute is None and feature.agg is None:
                raise ValueError(
                    f"{where}: needs agg (sum, mean, min, max, count, last) over the source's events,"
                    " or the view needs compute: file.py:function"
                )
            if self.compute is not None and feature.agg is not None:
                raise ValueError(f"{where}: a view with compute declares each feature's dtype, not agg")
            if self.compute is not None and feature.dtype is None:
                raise ValueError(f"{where}: needs a dtype (int64, float64, string, bool, unix_timestamp)")
        return self

    @property
    def ttl_delta(self) -> timedelta:
        return parse_duration(self.ttl)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class RepoFile(_Strict):
    """One YAML file of the feature repo."""

    entities: list[EntityDef] = Field(default_factory=list)
    feature_views: list[FeatureViewDef] = Field(default_factory=list)


@dataclass
class Definitions:
    """What the feature repo holds: the definitions that loaded, and each refused file or definition's reason."""

    repo: Path
    entities: dict[str, EntityDef] = field(default_factory=dict)
    views: dict[str, FeatureViewDef] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # "entity:<name>" / "view:<name>" -> file (as shown)
    broken: dict[str, str] = field(default_factory=dict)  # file -> why the whole file is refused
    refused: list[str] = field(default_factory=list)  # one definition refused, the rest of its file loaded
    refused_views: dict[str, str] = field(default_factory=dict)  # view -> why (defined twice, unknown entity)

    @property
    def errors(self) -> list[str]:
        return [*self.broken.values(), *self.refused]

    def view_file(self, view: str) -> str:
        return self.origin[f"view:{view}"]

    def join_keys(self, view: str) -> list[str]:
        return [self.entities[e].join_key for e in self.views[view].entities]


def _shown(path: Path, repo: Path) -> str:
    """The file as errors name it: ``feature_repo/cards.yaml``."""
    try:
        return str(Path(repo.name) / path.relative_to(repo))
    except ValueError:
        return str(path)


def _explain(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"])
    where = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", where)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key; allowed here: {', '.join(_allowed_keys(error['loc'][:-1]))}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys a section takes, found by walking the models along the error's path (list indices skipped)."""
    model: Any = RepoFile
    for part in loc:
        if isinstance(part, int):
            continue
        field_ = getattr(model, "model_fields", {}).get(part)
        if field_ is None:
            break
        inner = field_.annotation
        for _ in range(3):  # list[X], X | None, dict[str, X]: down to the model inside
            if hasattr(inner, "model_fields"):
                break
            inner = next((a for a in getattr(inner, "__args__", ()) if a is not type(None)), inner)
        model = inner
    return sorted(getattr(model, "model_fields", {}))


def repo_files(repo: Path) -> list[Path]:
    """The definition files, in a stable order; a file in a sub-folder belongs to the repo too, a hidden one not."""
    if not repo.is_dir():
        return []
    return sorted(
        p
        for p in repo.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.name != "feature_store.yaml"  # Feast's own configuration, written by the Feast step
        and not any(part.startswith(".") for part in p.relative_to(repo).parts)
    )


def _function_defined(path: Path, function: str) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)


def load_file(path: Path, repo: Path) -> RepoFile:
    """One file, validated on its own; raises DefinitionError naming the file and every bad field."""
    shown = _shown(path, repo)
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)  # CSafeLoader/SafeLoader: safe
    except (OSError, UnicodeDecodeError) as err:
        raise DefinitionError(f"{shown}: cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise DefinitionError(f"{shown}: not valid YAML: {' '.join(str(err).split())}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"{shown}: must be a mapping with entities and/or feature_views")
    try:
        parsed = RepoFile.model_validate(raw)
    except ValidationError as err:
        raise DefinitionError("; ".join(f"{shown}: {_explain(e)}" for e in err.errors())) from err
    problems = []
    for i, view in enumerate(parsed.feature_views):
        if view.compute is None:
            continue
        file, function = view.compute.split(":")
        code = path.parent / file
        try:
            ok = code.is_file() and _function_defined(code, function)
        except (OSError, SyntaxError, UnicodeDecodeError) as err:
            problems.append(f"{shown}: feature_views[{i}].compute: {file} cannot be read: {err}")
            continue
        if not ok:
            problems.append(
                f"{shown}: feature_views[{i}].compute: "
                + (f"{file} defines no function {function}" if code.is_file() else f"no file {file} beside {shown}")
            )
    for kind, items in (("entities", parsed.entities), ("feature_views", parsed.feature_views)):
        names = [item.name for item in items]
        for i, name in enumerate(names):
            if names.index(name) != i:
                problems.append(f"{shown}: {kind}[{i}].name: {name!r} is defined twice in this file")
    if problems:
        raise DefinitionError("; ".join(problems))
    return parsed


def load_definitions(repo: Path) -> Definitions:
    """Every file of the feature repo; a broken file or definition is set aside with its reason, never fatal."""
    defs = Definitions(repo=repo)
    loaded: dict[str, RepoFile] = {}
    for path in repo_files(repo):
        shown = _shown(path, repo)
        try:
            loaded[shown] = load_file(path, repo)
        except DefinitionError as err:
            defs.broken[shown] = str(err)

    # A name defined in two files: refused in both, each error naming the other file.
    twice: dict[str, dict[str, list[str]]] = {"entity": {}, "view": {}}
    for kind, attr in (("entity", "entities"), ("view", "feature_views")):
        where: dict[str, list[tuple[str, int]]] = {}
        for shown, parsed in loaded.items():
            for i, item in enumerate(getattr(parsed, attr)):
                where.setdefault(item.name, []).append((shown, i))
        for name, places in where.items():
            if len(places) > 1:
                files = [shown for shown, _ in places]
                twice[kind][name] = files
                for shown, i in places:
                    others = ", ".join(f for f in files if f != shown)
                    why = f"{shown}: {attr}[{i}].name: {kind} {name!r} is also defined in {others}"
                    defs.refused.append(why)
                    if kind == "view":
                        defs.refused_views.setdefault(name, why)
            else:
                shown, i = places[0]
                defs.origin[f"{kind}:{name}"] = shown
                if kind == "entity":
                    defs.entities[name] = loaded[shown].entities[i]

    for shown, parsed in loaded.items():
        for i, view in enumerate(parsed.feature_views):
            if defs.origin.get(f"view:{view.name}") != shown:
                continue  # refused above (defined twice)
            problems = []
            for j, entity in enumerate(view.entities):
                if entity in twice["entity"]:
                    problems.append(
                        f"{shown}: feature_views[{i}].entities[{j}]: entity {entity!r} is refused:"
                        f" defined in {', '.join(twice['entity'][entity])}"
                    )
                elif entity not in defs.entities:
                    known = sorted(defs.entities)
                    problems.append(
                        f"{shown}: feature_views[{i}].entities[{j}]: unknown entity {entity!r}; known: {known}"
                    )
            key_list = [defs.entities[e].join_key for e in view.entities if e in defs.entities]
            keys = set(key_list)
            if len(keys) != len(key_list):
                problems.append(f"{shown}: feature_views[{i}].entities: two entities share a join key: {key_list}")
            for j, feature in enumerate(view.features):
                if feature.name in keys or feature.name == view.source.event_time:
                    problems.append(
                        f"{shown}: feature_views[{i}].features[{j}].name: {feature.name!r} is a join key or the"
                        " event time of this view, not a feature"
                    )
            if problems:
                defs.refused.extend(problems)
                defs.refused_views[view.name] = problems[0]
                del defs.origin[f"view:{view.name}"]
            else:
                defs.views[view.name] = view
    return defs


def parse_ref(ref: str) -> tuple[str, str]:
    """``"card_activity:spend_1h"`` -> ``("card_activity", "spend_1h")``."""
    match = FEATURE_REF.match(ref)
    if not match:
        raise ValueError(f"{ref!r} is not a feature reference view:feature (e.g. card_activity:spend_1h)")
    return match.group(1), match.group(2)


def check_model_uses(defs: Definitions, spec: ModelSpec) -> list[str]:
    """What is wrong with the stored features a model names, one line each naming its spec file and field.

    A reference to an unknown view or feature is refused, and so is a view keyed on an entity
    whose join key is not a column of the model's data (its entity id, one of its ``dataset.keys``
    or one of its request-time features): the training set and the service could not look the view up.
    """
    folder = spec.model_dir
    shown = f"{folder.parent.name}/{folder.name}/spec.yaml" if folder is not None else f"models/{spec.name}/spec.yaml"
    carried = [spec.dataset.entity_id, *spec.dataset.keys, *spec.features.names]
    problems = []
    for i, ref in enumerate(spec.features.stored):
        view_name, feature = parse_ref(ref)
        where = f"{shown}: features.stored[{i}]"
        view = defs.views.get(view_name)
        if view is None:
            if view_name in defs.refused_views:
                why = f"feature view {view_name!r} is refused: {defs.refused_views[view_name]}"
            else:
                why = f"unknown feature view {view_name!r}; known: {sorted(defs.views)}"
                if defs.broken:
                    why += f" (broken, not loaded: {sorted(defs.broken)})"
            problems.append(f"{where}: {why}")
            continue
        if feature not in view.feature_names:
            problems.append(f"{where}: view {view_name} has no feature {feature!r}; it has {view.feature_names}")
            continue
        dtype = next(f.dtype or _AGG_DTYPE[f.agg or ""] for f in view.features if f.name == feature)
        if dtype in ("string", "unix_timestamp"):
            problems.append(
                f"{where}: {ref} is a {dtype}; a model takes numbers and booleans as stored features (float64 inputs)"
            )
            continue
        missing = [key for key in defs.join_keys(view_name) if key not in carried]
        if missing:
            problems.append(
                f"{where}: view {view_name} is keyed on {missing}, which the model's data does not carry"
                f" (its entity id {spec.dataset.entity_id!r}, dataset.keys {spec.dataset.keys} and request-time"
                " features); add the column to dataset.keys"
            )
    return problems


def views_used_by(specs: list[ModelSpec]) -> dict[str, list[str]]:
    """view -> the models naming one of its features, sorted."""
    used: dict[str, set[str]] = {}
    for spec in specs:
        for ref in spec.features.stored:
            used.setdefault(parse_ref(ref)[0], set()).add(spec.name)
    return {view: sorted(models) for view, models in used.items()}
