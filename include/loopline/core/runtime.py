"""Where a model's heavy steps run: in the Airflow worker's process, or in the model's runtime image.

A spec may name an image (``runtime: {image: loopline:local}``); its heavy steps (the train DAG's
``train_and_evaluate``, the batch scoring DAG's ``score``) then run in a container of that image
through the Docker provider (``loopline.core.runtime_operator``), so a model trains in exactly
the environment its Bento is served in. Either way the same function runs: the in-process task
calls ``run_step`` here, the container runs ``loopline step <name> --input <json>``, which calls
the same ``run_step`` with the same settings and prints its result as the last marked line.

This module imports no Airflow and no Docker client: the container imports it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec

IN_PROCESS = "in-process"
RUNTIME_TAG = "loopline.runtime"  # on the MLflow run (and so the model version): "in-process" or "image <ref>"
IMAGE_ID_TAG = "loopline.runtime_image_id"  # the exact image a containerised step ran in (sha256:...)
RESULT_MARK = "loopline-step-result: "  # the line of a step's stdout that carries its result (JSON)
ERROR_MARK = "loopline-step-error: "  # a permanent failure (a LooplineError): no retry can fix it
PERMANENT_EXIT = 3


class UnknownStep(LooplineError, ValueError):
    """A step name that is not in STEPS."""


def describe(spec: ModelSpec) -> str:
    """The runtime recorded in a model's lineage: ``in-process`` or ``image <reference>``."""
    return IN_PROCESS if spec.runtime is None else f"image {spec.runtime.image}"


def _train_and_evaluate(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    from loopline.training.train_flow import TrainRun, train_and_evaluate

    return train_and_evaluate(TrainRun(**payload), settings, image_id=image_id).to_dict()


def scores_dir_for(settings: Settings, model: str, run_id: str) -> Path:
    """A batch scoring run's output folder, keyed by its DAG run (a re-run overwrites only its own)."""
    return settings.scores_dir / model / re.sub(r"[:+]", "_", run_id)


def _score(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    from loopline.core.spec import load_spec
    from loopline.serving.batch_scoring import score_file

    spec = load_spec(payload["model"], settings.models_dir)
    runtime = IN_PROCESS if image_id is None else f"{describe(spec)} ({image_id})"
    out_dir = scores_dir_for(settings, payload["model"], payload["run_id"])
    result = score_file(payload["model"], payload["input_path"], payload["model_ref"], out_dir, settings, runtime)
    return result.to_dict()


# name -> (function, payload keys naming files the step reads: a container mounts their folders read only)
STEPS: dict[str, tuple[Callable[[dict[str, Any], Settings, str | None], dict[str, Any]], tuple[str, ...]]] = {
    "train_and_evaluate": (_train_and_evaluate, ()),
    "score": (_score, ("input_path",)),
}


def input_keys(step: str) -> tuple[str, ...]:
    """The payload keys of ``step`` that name files it reads (outside the settings' folders)."""
    return _step(step)[1]


def input_files(step: str, payload: dict[str, Any]) -> list[Path]:
    """The files outside the settings' folders that ``step`` reads (what a container must also see)."""
    return [Path(str(payload[key])) for key in input_keys(step) if payload.get(key)]


def _step(name: str):
    try:
        return STEPS[name]
    except KeyError:
        raise UnknownStep(f"unknown step {name!r}; the steps are {sorted(STEPS)}") from None


def run_step(name: str, payload: dict[str, Any], settings: Settings, image_id: str | None = None) -> dict[str, Any]:
    """Run one heavy step with these settings; ``image_id``: the image it runs in (None: in-process)."""
    return _step(name)[0](payload, settings, image_id)


def step_command(name: str, payload: str) -> list[str]:
    """What a runtime image runs for a step: the project's CLI, the step's input as one JSON argument."""
    _step(name)
    return ["loopline", "step", name, "--input", payload]


def result_of(lines: list[str] | str | None) -> dict[str, Any]:
    """The result a step printed (its last marked line), from a container's output."""
    import json

    lines = [lines] if isinstance(lines, str) else list(lines or [])
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            return json.loads(line.removeprefix(RESULT_MARK))
    raise StepOutputError(f"the step printed no result line ({RESULT_MARK.strip()} ...); last lines: {lines[-5:]}")


class StepOutputError(RuntimeError):
    """The container ended well but printed no result: transient (a killed or cut-off stream), so retried."""
