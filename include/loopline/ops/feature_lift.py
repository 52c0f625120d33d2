"""What a model's stored features are worth: its holdout metrics with them and with its request-time inputs only.

``bench/feature_lift.py`` runs it on generated data: the
model's generator makes ``weeks`` weekly batches, stored as ingest stores them (``normalise``); each
view the model reads is computed from those batches by the feature pipeline's own code
(``loopline.features.compute.compute_view``) and written to a feature store of its own in a
temporary folder; then the model is trained twice with the platform's recipe
(``trainer.fit_and_evaluate``: the same split, params and seed):

- **with** its stored features: the rows joined through ``FeatureStore.training_set``
  (``loopline.training.stored``), then the model's features.py;
- **without**: the same rows and spec with ``features.stored`` emptied and no derived inputs
  (the derived inputs of a model with stored features may read them), the request-time inputs alone.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec


@dataclass(frozen=True)
class Lift:
    model: str
    rows: int
    weeks: int
    with_stored: dict[str, float]
    without_stored: dict[str, float]
    lineage: dict[str, Any]

    def table(self) -> str:
        lines = [
            f"{self.model}: {self.rows} generated rows over {self.weeks} weeks; holdout = the last week",
            f"{'metric':<24}{'with stored':>14}{'request only':>14}",
        ]
        for key, value in self.with_stored.items():
            lines.append(f"{key:<24}{value:>14.4f}{self.without_stored.get(key, float('nan')):>14.4f}")
        return "\n".join(lines)


def request_only(spec: ModelSpec) -> ModelSpec:
    """The spec as a model of its request-time inputs only: no stored features, no derived inputs (no folder)."""
    raw = spec.model_dump()
    raw["features"]["stored"] = []
    raw["features"]["stored_missing"] = {}  # a rule for views no longer read would be refused
    return ModelSpec.model_validate(raw)


def measure(spec: ModelSpec, settings: Settings, weeks: int = 8, rows_per_week: int = 4000, seed: int = 0) -> Lift:
    """Generate, compute the views, join, train with and without the stored features; the holdout metrics of each."""
    import pandas as pd

    from loopline.features.compute import compute_view
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig
    from loopline.ingestion.ingest import normalise
    from loopline.ops.demo_data import load_generator
    from loopline.training import trainer as training
    from loopline.training.stored import _STORES, with_stored_features

    generator = load_generator(spec.model_dir or settings.models_dir / spec.name)
    batches = [generator.make_batch(week, rows_per_week, seed=seed) for week in range(weeks)]
    frame = pd.concat([normalise(b, spec) for b in batches], ignore_index=True)
    defs = load_definitions(settings.feature_repo)
    params = {**spec.training.params, "seed": spec.training.seed}
    with tempfile.TemporaryDirectory() as tmp:
        local = dataclasses.replace(settings, feast_root=Path(tmp) / "feast", feast_online_redis="", feast_registry="")
        store = FeatureStore.open(defs, StoreConfig(root=local.feast_root))
        store.apply()
        for view in dict.fromkeys(ref.split(":", 1)[0] for ref in spec.features.stored):
            store.write_offline(view, compute_view(defs.views[view], frame, defs), batch_id="lift")
        try:
            joined, lineage = with_stored_features(training.labelled(frame, spec), spec, local)
            with_stored = training.fit_and_evaluate(joined, spec, params)[1]
        finally:
            for key in [k for k in _STORES if k[1].root == local.feast_root]:
                del _STORES[key]
    without = training.fit_and_evaluate(training.labelled(frame, spec), request_only(spec), params)[1]
    return Lift(spec.name, len(frame), weeks, with_stored, without, lineage or {})
