"""Batch scoring: a file of rows in, the service's answers with model version and reason codes out.

Each row of ``scores.parquet`` is what the prediction service answers for that row, in the
same fields (``Task.answer``, through ``Answers.fields``), with the caller's entity id where
the HTTP answer has its ``request_id``: ``<entity_id>``, the task's answer fields (binary:
``score``, ``decision``; regression: ``prediction``; multiclass: ``predicted_class``,
``probabilities``), ``model_version``, ``reasons``. The rest of the lineage (input hash, data
version, code commit, feature version) is in ``lineage.json`` beside it.

A model with stored features gets them from the offline store as of each row's
``dataset.timestamp`` (the point-in-time rule of training; ``loopline.serving.stored.offline_features``),
under the spec's ``features.stored_missing`` rule.

The output folder is keyed by the DAG run, so a re-run overwrites its own result
and never mixes with another run's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings

if TYPE_CHECKING:  # pandas and LightGBM are imported by the task that scores, not by the DAG file
    import pandas as pd

    from loopline.core.spec import ModelSpec
    from loopline.serving.scoring import Answers

MODEL_REF_PATTERN = r"^(champion|challenger|[1-9][0-9]*)$"


class ScoringInputError(LooplineError, ValueError):
    """The file to score is missing, unreadable or lacks columns the model needs."""


@dataclass(frozen=True)
class ScoringResult:
    output: str
    lineage: str
    rows: int
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def scores_dir_for(settings: Settings, model: str, run_id: str) -> Path:
    """A batch scoring run's output folder, keyed by its DAG run (a re-run overwrites only its own)."""
    return settings.scores_dir / model / re.sub(r"[:+]", "_", run_id)


def score_step(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    """The batch scoring DAG's heavy step (``loopline step score``): in-process, or in the spec's image."""
    from loopline.core.runtime import IN_PROCESS, describe
    from loopline.core.spec import load_spec

    spec = load_spec(payload["model"], settings.models_dir)
    runtime = IN_PROCESS if image_id is None else f"{describe(spec)} ({image_id})"
    out_dir = scores_dir_for(settings, payload["model"], payload["run_id"])
    result = score_file(payload["model"], payload["input_path"], payload["model_ref"], out_dir, settings, runtime)
    return result.to_dict()


def resolve_model(model_name: str, model_ref: str, settings: Settings) -> tuple[str, str]:
    """(model version, model URI) for 'champion', 'challenger' or a version number."""
    from loopline.core import tracking

    if not re.match(MODEL_REF_PATTERN, model_ref):
        raise ScoringInputError(f"model reference {model_ref!r} is not 'champion', 'challenger' or a version number")
    client = tracking.client_for(settings)
    version = model_ref if model_ref.isdigit() else tracking.alias_version(client, model_name, model_ref)
    if version is None:
        raise ScoringInputError(f"model {model_name} has no {model_ref} yet")
    return version, f"models:/{model_name}/{version}"


def score_file(
    model_name: str, input_path: str, model_ref: str, out_dir: Path, settings: Settings, runtime: str = "in-process"
) -> ScoringResult:
    """Score a file with one version; ``runtime``: where this ran (lineage's ``scored_in``)."""
    import mlflow.lightgbm

    from loopline.core import tracking
    from loopline.core.features import feature_set
    from loopline.core.spec import load_spec
    from loopline.ingestion.ingest import sha256_of
    from loopline.ingestion.validation import read_batch
    from loopline.serving.scoring import score_arrays

    spec = load_spec(model_name, settings.models_dir)
    path = Path(input_path)
    if not path.is_file():
        raise ScoringInputError(f"no file to score at {path}")
    try:
        raw = read_batch(path)
    except Exception as err:  # any reader error: the file is not a table we can score
        raise ScoringInputError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    needed = [spec.dataset.entity_id, *spec.features.names]
    store_missing = None
    if spec.features.stored:  # the offline store, as of each row's time: the point-in-time rule of training
        from loopline.serving.stored import StoredFeatureRefused, offline_features, open_store

        store, defs = open_store(settings)
        needed += [spec.dataset.timestamp, *(k for v in spec.features.stored_views for k in defs.join_keys(v))]
        lacking = [c for c in dict.fromkeys(needed) if c not in raw.columns]
        if lacking:
            raise ScoringInputError(f"{path.name} lacks columns {lacking}")
        try:
            raw, store_missing = offline_features(raw, spec, store, defs)
        except StoredFeatureRefused as err:
            raise ScoringInputError(f"{path.name}: {err}") from err
    missing = [c for c in dict.fromkeys(needed) if c not in raw.columns]
    if missing:
        raise ScoringInputError(f"{path.name} lacks columns {missing}")
    version, uri = resolve_model(model_name, model_ref, settings)
    booster = mlflow.lightgbm.load_model(uri)
    answered = score_arrays(booster, feature_set(spec).raw_arrays(raw), spec, num_threads=0)
    result = scored_table(raw[spec.dataset.entity_id], answered, spec, version)
    if store_missing is not None and spec.features.scored_missing_views:
        result["stored_missing"] = [",".join(views) for views in store_missing]  # as the HTTP answer flags them
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "scores.parquet"
    result.to_parquet(output, index=False)
    model_tags = tracking.client_for(settings).get_model_version(model_name, version).tags
    lineage = {
        "model": model_name,
        "model_ref": model_ref,
        "model_version": version,
        "input": str(path),
        "input_sha256": sha256_of(path),
        "rows": len(result),
        "scored_in": runtime,
        **{k: v for k, v in model_tags.items() if k.startswith("loopline.")},
    }
    lineage_path = out_dir / "lineage.json"
    lineage_path.write_text(json.dumps(lineage, indent=2) + "\n")
    return ScoringResult(str(output), str(lineage_path), len(result), version)


def scored_table(entities: pd.Series, answered: Answers, spec: ModelSpec, version: str) -> pd.DataFrame:
    """The file's rows: entity id, then the HTTP answer's fields but ``request_id`` (task's, version, reasons)."""
    import pandas as pd

    columns = {spec.dataset.entity_id: entities.to_numpy(), **answered.fields(spec)}
    columns.update(model_version=[version] * len(answered), reasons=answered.reasons)  # the answer's order
    return pd.DataFrame(columns)
