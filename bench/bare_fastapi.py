"""Baseline for ``bench.serve_bench``: the same model behind a bare FastAPI + uvicorn endpoint.

Same booster file (``LOOPLINE_BENCH_BOOSTER``: the LightGBM model file inside the
Bento's model), same feature and scoring code (``loopline.serving.scoring.score_frame``),
same request and response JSON as the Loopline service, and the same pydantic
validation of every field (generated from the same ``spec.yaml``: types, bounds,
category levels, ``extra="forbid"``, 1..1000 rows under "instances"). So the difference the
benchmark measures is the platform around the model, not the model.

Left out on purpose, because they are what the platform adds: champion/canary
routing from the serving state store, Prometheus metrics, the prediction log,
BentoML's middlewares (OpenTelemetry, access log, traffic metrics, timeout,
concurrency limit). The endpoint is a plain ``def``, the FastAPI idiom for
blocking work: it runs in Starlette's thread pool, as the service's sync API
runs in BentoML's (whose default is one thread). ``LOOPLINE_BENCH_THREADS=1`` limits the
pool to one thread like BentoML's default, to tell the thread model's share of a gap
from the per-request work's.

Run: ``LOOPLINE_BENCH_BOOSTER=/path/model.lgb uvicorn bench.bare_fastapi:app --no-access-log``
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import anyio.to_thread
import lightgbm as lgb
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, create_model

from loopline.core.spec import ModelSpec, load_spec_file
from loopline.serving.scoring import score_frame

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "models" / "credit_risk" / "spec.yaml"
SPEC_PATH = Path(os.environ.get("LOOPLINE_BENCH_SPEC", DEFAULT_SPEC))
SPEC: ModelSpec = load_spec_file(SPEC_PATH)
BOOSTER = lgb.Booster(model_file=os.environ["LOOPLINE_BENCH_BOOSTER"])
MODEL_VERSION = os.environ.get("LOOPLINE_BENCH_MODEL_VERSION", "1")
MAX_BATCH = 1000


def _application_model() -> type[BaseModel]:
    """The service's request schema, built the same way from the same spec."""
    fields: dict = {SPEC.dataset.entity_id: (str, Field(min_length=1, max_length=128))}
    for name, bounds in SPEC.features.numeric.items():
        fields[name] = (float | None, Field(default=None, ge=bounds.min, le=bounds.max))
    for name, levels in SPEC.features.categorical.items():
        fields[name] = (Literal[tuple(levels)] | None, None)  # type: ignore[valid-type]
    return create_model("Application", __config__=ConfigDict(extra="forbid"), **fields)


Application = _application_model()


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: Annotated[list[Application], Field(min_length=1, max_length=MAX_BATCH)]  # type: ignore[valid-type]


class Prediction(BaseModel):
    request_id: str
    score: float
    decision: Literal["approve", "decline"]
    model_version: str
    reasons: list[str]


THREADS = int(os.environ.get("LOOPLINE_BENCH_THREADS", "0"))  # 0: Starlette's default pool (40 threads)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    if THREADS:  # investigation knob: 1 serialises scoring the way BentoML's default ``threads=1`` does
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    yield


app = FastAPI(title="bare credit_risk scorer (benchmark baseline)", docs_url=None, redoc_url=None, lifespan=lifespan)


@app.post("/predict")
def predict(request: Request) -> list[Prediction]:
    raw = pd.DataFrame([a.model_dump() for a in request.instances])
    scored = score_frame(BOOSTER, raw, SPEC)
    return [
        Prediction(
            request_id=uuid.uuid4().hex,
            score=r.score,
            decision=r.decision,
            model_version=MODEL_VERSION,
            reasons=r.reasons,
        )
        for r in scored.itertuples()
    ]


@app.get("/readyz")
def ready() -> dict:
    return {"ready": True}
