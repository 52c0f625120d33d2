"""BentoML service for a Loopline model: validated requests, scores, decisions, reason codes.

The request schema is generated from ``spec.yaml`` beside this file, so a
malformed request (wrong type, missing field, unknown category, out-of-range
value) is refused with a 4xx naming the field before it reaches the model.
Features come from ``loopline.features``, the code training used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import bentoml
from pydantic import BaseModel, ConfigDict, Field, create_model

with bentoml.importing():
    import pandas as pd

    from loopline.scoring import score_frame
    from loopline.spec import ModelSpec, load_spec_file

SPEC: ModelSpec = load_spec_file(Path(__file__).with_name("spec.yaml"))  # beside it in the repo and in the Bento
_PIN = Path(__file__).with_name("bento_model.json")  # written by loopline.packaging into each Bento
_DEV_TAG = os.environ.get("LOOPLINE_BENTO_MODEL", f"{SPEC.name}:latest")  # `bentoml serve` from the repo
MODEL_TAG = json.loads(_PIN.read_text())["tag"] if _PIN.exists() else _DEV_TAG
MAX_BATCH = 1000


def _application_model() -> type[BaseModel]:
    fields: dict = {SPEC.dataset.entity_id: (str, Field(min_length=1, max_length=128))}
    for name, bounds in SPEC.features.numeric.items():
        fields[name] = (float | None, Field(default=None, ge=bounds.min, le=bounds.max))
    for name, levels in SPEC.features.categorical.items():
        fields[name] = (Literal[tuple(levels)] | None, None)  # type: ignore[valid-type]
    return create_model("Application", __config__=ConfigDict(extra="forbid"), **fields)


Application = _application_model()


class Prediction(BaseModel):
    score: float
    decision: Literal["approve", "decline"]
    model_version: str
    reasons: list[str]


@bentoml.service(name=f"{SPEC.name.replace('_', '-')}", traffic={"timeout": 10})
class ModelService:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import mlflow.lightgbm

        self.booster = mlflow.lightgbm.load_model(self.bento_model.path_of("mlflow_model"))
        self.model_version = self.bento_model.info.labels.get("mlflow_model_version", "unknown")

    @bentoml.api
    def predict(self, applications: list[Application] = Field(min_length=1, max_length=MAX_BATCH)) -> list[Prediction]:  # type: ignore[valid-type]
        raw = pd.DataFrame([a.model_dump() for a in applications])
        scored = score_frame(self.booster, raw, SPEC)
        return [
            Prediction(score=row.score, decision=row.decision, model_version=self.model_version, reasons=row.reasons)
            for row in scored.itertuples()
        ]

    @bentoml.api(route="/ready")
    def ready(self) -> dict:
        return {"ready": True, "model": SPEC.name, "model_version": self.model_version}
