"""A heavy step in the model's runtime image: the Docker provider's ``DockerOperator``, set up by Loopline.

What the container gets, all decided at run time on the worker from ``loopline.core.settings``
(never at parse time, so the dag-processor's environment does not leak into a task):

- the command ``loopline step <name> --input <json> --image-id <sha256>``: the project's CLI
  running the same ``runtime.run_step`` the in-process task runs;
- the settings as environment (``Settings.container_env``), secrets apart (``private_environment``:
  not templated, not rendered in the UI);
- the folders the settings name, bind-mounted at the same paths (``Settings.local_paths``: the
  state folder writable; the project, models and expectations read only), plus the folders of the
  files the step reads (a file to score), read only; paths in the lineage stay those of the host;
- host networking only (its stores are on 127.0.0.1 in the embedded default), the worker's uid
  and gid (files it writes belong to the same user), ``HOME=/tmp``;
- the engine at ``LOOPLINE_DOCKER_URL`` (default ``DOCKER_HOST``, else ``make engine``'s podman socket).

The image must be on the engine already (``make image``): Loopline never pulls, so a typo in a
spec fails the task with that sentence instead of reaching out to a registry. The result is the
step's last marked line (``runtime.result_of``), pushed to XCom as the in-process task's would be,
so the downstream tasks do not know where it ran. A ``LooplineError`` inside the container (exit 3)
stays permanent: the task fails without retries, with the container's message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

from loopline.core.errors import LooplineError
from loopline.core.runtime import ERROR_MARK, Step, input_files, result_of, step_command
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec

# The Docker API client's timeout for one call. The log stream is one long call, and a training step
# can print nothing for many minutes, so this bounds a hung engine, not the step (execution_timeout does).
API_TIMEOUT_SECONDS = 6 * 3600


class RuntimeImageMissing(LooplineError, RuntimeError):
    """The spec's runtime image is not on the container engine (Loopline does not pull)."""


class StepFailed(LooplineError, RuntimeError):
    """The step failed inside the container with a permanent (Loopline) error."""


def mounts_for(settings: Settings, extra_files: list[Path] = ()) -> list[Mount]:
    """Bind mounts at the same paths: the settings' folders, and the folders of the step's input files."""
    paths = settings.local_paths()
    for file in extra_files:
        folder = file.resolve().parent
        if not any(folder.is_relative_to(done) for done, _ in paths):
            paths.append((folder, False))
    mounts = []
    for path, writable in paths:
        if writable:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            continue  # nothing to read there (e.g. no expectations folder): a bind of a missing path fails
        mounts.append(Mount(target=str(path), source=str(path), type="bind", read_only=not writable))
    return mounts


class StepInImage(DockerOperator):
    """One heavy step (a ``runtime.Step``) in a container of the model's runtime image; returns its result."""

    template_fields = (*DockerOperator.template_fields, "payload")

    def __init__(self, *, step: Step, payload: str | dict[str, Any], image: str, **kwargs: Any) -> None:
        super().__init__(
            image=image,
            command=None,  # set in prepare(), from the rendered payload
            network_mode="host",
            auto_remove="force",
            mount_tmp_dir=False,
            xcom_all=True,  # every line: the result is the last *marked* one, whatever a library prints after it
            timeout=API_TIMEOUT_SECONDS,
            labels={"ai.loopline.step": step.name},
            **kwargs,
        )
        self.step = step
        self.payload = payload

    def step_input(self) -> dict[str, Any]:
        """The rendered payload: a dict of rendered values, or a rendered JSON string (an upstream XCom)."""
        return dict(self.payload) if isinstance(self.payload, dict) else json.loads(self.payload)

    def prepare(self, settings: Settings, payload: dict[str, Any], image_id: str) -> None:
        """Command, environment, mounts, user and engine for this run (no engine is contacted here)."""
        for key in self.step.input_keys:  # a relative file is the worker's: the container's cwd is another
            if payload.get(key):
                payload[key] = str(Path(str(payload[key])).absolute())
        plain, secret = settings.container_env()
        self.environment = {**plain, "HOME": "/tmp"}
        self._private_environment = secret
        self.mounts = mounts_for(settings, input_files(self.step, payload))
        self.user = f"{os.getuid()}:{os.getgid()}"
        self.docker_url = settings.docker_url
        self.command = [*step_command(self.step, json.dumps(payload)), "--image-id", image_id]

    def image_id(self) -> str:
        found = self.cli.images(name=self.image)
        if not found:
            raise RuntimeImageMissing(
                f"runtime image {self.image!r} (the spec's runtime.image) is not on the container engine at"
                f" {self.docker_url}; build it there (`make image` tags loopline:local) or load it; Loopline does"
                " not pull images"
            )
        return str(found[0]["Id"])

    def execute(self, context: Any) -> dict[str, Any]:
        from loopline.core.settings import ensure_dirs, get_settings

        settings = ensure_dirs(get_settings())
        self.docker_url = settings.docker_url  # before the hook (a cached property) is first made
        self.prepare(settings, self.step_input(), self.image_id())
        try:
            lines = super().execute(context)
        except DockerContainerFailedException as err:
            permanent = [line for line in err.logs or [] if line.startswith(ERROR_MARK)]
            if permanent:
                raise StepFailed(f"{self.step.name} in {self.image}: {permanent[-1].removeprefix(ERROR_MARK)}") from err
            raise
        return result_of(lines)


def step_in_image(spec: ModelSpec, step: Step, payload: str | dict[str, Any], **kwargs: Any) -> StepInImage:
    """The task that runs ``step`` for this model in its runtime image (the spec must name one)."""
    if spec.runtime is None:
        raise ValueError(f"model {spec.name} names no runtime image; run {step.name} in-process")
    return StepInImage(
        task_id=kwargs.pop("task_id", step.name), step=step, payload=payload, image=spec.runtime.image, **kwargs
    )
