"""Where a model's heavy steps run: in the Airflow worker's process, or in the model's runtime image.

A spec may name an image (``runtime: {image: loopline:local}``); its heavy steps (the train DAG's
``train_and_evaluate``, the batch scoring DAG's ``score``) then run in a container of that image
through the Docker provider (``loopline.core.runtime_operator``), so a model trains in exactly
the environment its Bento is served in. Either way the same function runs: the in-process task
calls ``run_step`` here, the container runs ``loopline step <name> --input <json>``, which calls
the same ``run_step`` with the same settings and prints its result as the last marked line.

A step is a ``Step``: its name, its function and the payload keys naming files it reads. Core names
no step: the steps are the stations' functions, listed above them (``loopline.ops.steps``), and a
DAG file or the ``loopline step`` command passes the ``Step`` in.

This module imports no Airflow and no Docker client: the container imports it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec

StepFunction = Callable[[dict[str, Any], Settings, str | None], dict[str, Any]]

IN_PROCESS = "in-process"
RUNTIME_TAG = "loopline.runtime"  # on the MLflow run (and so the model version): "in-process" or "image <ref>"
IMAGE_ID_TAG = "loopline.runtime_image_id"  # the exact image a containerised step ran in (sha256:...)
RESULT_MARK = "loopline-step-result: "  # the line of a step's stdout that carries its result (JSON)
ERROR_MARK = "loopline-step-error: "  # a permanent failure (a LooplineError): no retry can fix it
PERMANENT_EXIT = 3


class UnknownStep(LooplineError, ValueError):
    """A step name that is not among the steps (``loopline.ops.steps.STEPS``)."""


def describe(spec: ModelSpec) -> str:
    """The runtime recorded in a model's lineage: ``in-process`` or ``image <reference>``."""
    return IN_PROCESS if spec.runtime is None else f"image {spec.runtime.image}"


@dataclass(frozen=True)
class Step:
    """A heavy step: the name ``loopline step`` runs it by, its function (payload, settings, image id) ->
    result, and the payload keys naming files it reads (a container mounts their folders read only)."""

    name: str
    function: StepFunction
    input_keys: tuple[str, ...] = ()


def input_files(step: Step, payload: dict[str, Any]) -> list[Path]:
    """The files outside the settings' folders that ``step`` reads (what a container must also see)."""
    return [Path(str(payload[key])) for key in step.input_keys if payload.get(key)]


def run_step(step: Step, payload: dict[str, Any], settings: Settings, image_id: str | None = None) -> dict[str, Any]:
    """Run one heavy step with these settings; ``image_id``: the image it runs in (None: in-process)."""
    return step.function(payload, settings, image_id)


def step_command(step: Step, payload: str) -> list[str]:
    """What a runtime image runs for a step: the project's CLI, the step's input as one JSON argument."""
    return ["loopline", "step", step.name, "--input", payload]


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
