"""The heavy steps, by name: what ``loopline step <name>`` runs and what a DAG file passes to the runtime.

Each step is a station's function (``training.train_flow.train_step``, ``serving.batch_scoring.score_step``),
listed here, above the stations, so ``core.runtime`` names none of them. The functions are imported when
a step runs, not here: a DAG file imports this module at parse time.
"""

from __future__ import annotations

from typing import Any

from loopline.core.runtime import Step, UnknownStep
from loopline.core.settings import Settings


def _train_and_evaluate(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    from loopline.training.train_flow import train_step

    return train_step(payload, settings, image_id)


def _score(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    from loopline.serving.batch_scoring import score_step

    return score_step(payload, settings, image_id)


TRAIN_AND_EVALUATE = Step("train_and_evaluate", _train_and_evaluate)
SCORE = Step("score", _score, input_keys=("input_path",))  # the file to score: a container mounts its folder
STEPS: dict[str, Step] = {step.name: step for step in (TRAIN_AND_EVALUATE, SCORE)}


def step_named(name: str) -> Step:
    """The step called ``name``; UnknownStep (permanent) names the steps there are."""
    try:
        return STEPS[name]
    except KeyError:
        raise UnknownStep(f"unknown step {name!r}; the steps are {sorted(STEPS)}") from None
