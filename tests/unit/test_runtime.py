"""A model's runtime image: the settings a container gets, the operator's command, env and mounts, and the step CLI.

No engine here: the operator is built and prepared as the task does, its engine calls are faked.
tests/containers/test_runtime_image.py runs the train step in a real image and compares it with in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from airflow.providers.docker.exceptions import DockerContainerFailedException

from loopline.core import runtime
from loopline.core.errors import LooplineError
from loopline.core.runtime_operator import RuntimeImageMissing, StepFailed, StepInImage, step_in_image
from loopline.core.settings import get_settings
from loopline.core.spec import RuntimeSpec, load_spec
from loopline.ops.steps import SCORE, STEPS, TRAIN_AND_EVALUATE, step_named

MODELS = Path(__file__).resolve().parents[2] / "models"
RUN = {"model_name": "m", "run_id": "r1", "experiment_id": "1", "data": {}, "fingerprint": "f", "reused": False}


@pytest.fixture
def env_settings(tmp_path, monkeypatch):
    """Settings of a line in tmp_path: state, models elsewhere, a secret and a stack credential set."""
    for key in [k for k in os.environ if k.startswith(("LOOPLINE_", "MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LOOPLINE_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    monkeypatch.setenv("LOOPLINE_DVC_REMOTE", str(tmp_path / "remote"))  # a store outside the state folder
    monkeypatch.setenv("LOOPLINE_PSEUDONYM_SECRET", "s" * 40)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("LOOPLINE_DOCKER_URL", "unix:///tmp/engine.sock")
    monkeypatch.setenv("UNRELATED", "x")
    (tmp_path / "models").mkdir()
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_describe_names_the_image_or_in_process(tmp_path):
    assert runtime.describe(load_spec("credit_risk", MODELS)) == "in-process"
    boxed = load_spec("credit_risk", MODELS).model_copy(update={"runtime": RuntimeSpec(image="loopline:local")})
    assert runtime.describe(boxed) == "image loopline:local"


def test_the_container_env_gives_the_same_settings_in_another_process(env_settings, tmp_path):
    plain, secret = env_settings.container_env()
    assert secret == {"LOOPLINE_PSEUDONYM_SECRET": "s" * 40, "MLFLOW_TRACKING_PASSWORD": "hunter2"}
    assert "UNRELATED" not in plain and not any(k.startswith("AIRFLOW") for k in plain)
    assert plain["LOOPLINE_PROJECT_ROOT"] == str(env_settings.project_root)
    assert plain["MLFLOW_TRACKING_URI"] == env_settings.mlflow_tracking_uri
    code = "import json, dataclasses; from loopline.core.settings import get_settings as g; " \
        "print(json.dumps(dataclasses.asdict(g()), default=str))"  # fmt: skip
    other = subprocess.run(
        [sys.executable, "-c", code], env={**plain, **secret, "PATH": os.environ["PATH"]}, cwd=tmp_path,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(other.stdout) == json.loads(json.dumps(asdict(env_settings), default=str))


def test_local_paths_are_the_outermost_folders_state_writable_code_read_only(env_settings, tmp_path):
    paths = dict(env_settings.local_paths())
    assert paths[tmp_path / "home"] is True and paths[tmp_path / "remote"] is True
    assert paths[tmp_path / "models"] is False and paths[tmp_path / "expectations"] is False
    assert paths[env_settings.project_root] is False
    assert not any(p.is_relative_to(tmp_path / "home") and p != tmp_path / "home" for p in paths)  # inside: covered


def test_the_embedded_default_mounts_the_project_read_only_and_its_state_folder_writable(env_settings, monkeypatch):
    for key in ("LOOPLINE_HOME", "LOOPLINE_MODELS_DIR", "LOOPLINE_EXPECTATIONS_DIR", "LOOPLINE_DVC_REMOTE"):
        monkeypatch.delenv(key)
    get_settings.cache_clear()
    default = get_settings()
    assert default.home == default.project_root / ".loopline"
    assert default.local_paths() == [(default.project_root, False), (default.home, True)]  # parent first


def _operator(payload=None, step="train_and_evaluate") -> StepInImage:
    return StepInImage(task_id="t", step=step_named(step), payload=payload or json.dumps(RUN), image="loopline:local")


def test_the_operator_runs_the_step_cli_with_the_settings_mounted_at_the_same_paths(env_settings, tmp_path):
    op = _operator()
    op.prepare(env_settings, op.step_input(), "sha256:abc")
    assert op.command == [
        "loopline",
        "step",
        "train_and_evaluate",
        "--input",
        json.dumps(RUN),
        "--image-id",
        "sha256:abc",
    ]
    assert op.network_mode == "host" and op.auto_remove == "force" and op.mount_tmp_dir is False
    assert op.user == f"{os.getuid()}:{os.getgid()}" and op.docker_url == "unix:///tmp/engine.sock"
    plain, secret = env_settings.container_env()
    assert op.environment == {**plain, "HOME": "/tmp"} and op._private_environment == secret
    assert "hunter2" not in json.dumps(op.environment)  # secrets never in the templated, rendered field
    mounts = {m["Target"]: m for m in op.mounts}
    assert all(m["Source"] == target and m["Type"] == "bind" for target, m in mounts.items())  # same paths
    assert mounts[str(tmp_path / "home")]["ReadOnly"] is False
    assert mounts[str(tmp_path / "remote")]["ReadOnly"] is False  # created, so the bind cannot fail
    assert mounts[str(tmp_path / "models")]["ReadOnly"] is True
    assert str(tmp_path / "expectations") not in mounts  # missing: nothing to read, and a bind would fail
    assert "ai.loopline.step" in op.labels


def test_a_file_to_score_is_mounted_read_only_and_made_absolute(env_settings, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.chdir(tmp_path)
    payload = {"model": "m", "input_path": "inbox/apps.csv", "model_ref": "champion", "run_id": "manual__1"}
    op = _operator(payload, step="score")
    op.prepare(env_settings, op.step_input(), "sha256:abc")
    sent = json.loads(op.command[op.command.index("--input") + 1])
    assert sent["input_path"] == str(inbox / "apps.csv")
    assert {m["Target"]: m["ReadOnly"] for m in op.mounts}[str(inbox)] is True


class _FakeCli:
    def __init__(self, images):
        self._images = images

    def images(self, name):
        return self._images


def _with_engine(op: StepInImage, images) -> StepInImage:
    op.__dict__["hook"] = type("Hook", (), {"api_client": _FakeCli(images)})()
    return op


def test_an_image_that_is_not_on_the_engine_fails_permanently_and_is_never_pulled(env_settings):
    op = _with_engine(_operator(), [])
    with pytest.raises(RuntimeImageMissing, match=r"'loopline:local' .* not on the container engine .*make image"):
        op.execute({})
    assert issubclass(RuntimeImageMissing, LooplineError)  # PERMANENT_ERRORS: no retry


def test_the_result_is_the_last_marked_line_and_a_permanent_error_stays_permanent(env_settings, monkeypatch):
    from airflow.providers.docker.operators.docker import DockerOperator

    out = [f"{runtime.RESULT_MARK}{json.dumps({'old': 1})}", "INFO training", f"{runtime.RESULT_MARK}{json.dumps(RUN)}"]
    monkeypatch.setattr(DockerOperator, "execute", lambda self, context: [*out, "a library's goodbye"])
    op = _with_engine(_operator(), [{"Id": "sha256:abc"}])
    assert op.execute({}) == RUN
    assert op.command[-2:] == ["--image-id", "sha256:abc"]

    def fail(self, context):
        raise DockerContainerFailedException("exit 3", logs=["x", f"{runtime.ERROR_MARK}SpecError: bad spec"])

    monkeypatch.setattr(DockerOperator, "execute", fail)
    with pytest.raises(StepFailed, match="train_and_evaluate in loopline:local: SpecError: bad spec"):
        _with_engine(_operator(), [{"Id": "sha256:abc"}]).execute({})

    def crash(self, context):
        raise DockerContainerFailedException("exit 137", logs=["Killed"])

    monkeypatch.setattr(DockerOperator, "execute", crash)
    with pytest.raises(DockerContainerFailedException):  # transient (killed, engine trouble): retried
        _with_engine(_operator(), [{"Id": "sha256:abc"}]).execute({})


def test_a_step_without_a_result_line_is_an_error_naming_the_last_lines():
    with pytest.raises(runtime.StepOutputError, match="printed no result line"):
        runtime.result_of(["only", "logs"])
    assert runtime.result_of(f'{runtime.RESULT_MARK}{{"a": 1}}') == {"a": 1}


def test_only_known_steps_and_only_models_with_an_image(tmp_path):
    with pytest.raises(runtime.UnknownStep, match=r"unknown step 'trian'; the steps are \['score', 'train_and"):
        _operator(step="trian")
    with pytest.raises(ValueError, match="names no runtime image"):
        step_in_image(load_spec("credit_risk", MODELS), TRAIN_AND_EVALUATE, "{}")


def test_the_steps_are_the_stations_functions_listed_above_core():
    """core.runtime names no step; ops.steps lists them, and imports a station only when its step runs."""
    assert sorted(STEPS) == ["score", "train_and_evaluate"]
    assert STEPS["score"] is SCORE and SCORE.input_keys == ("input_path",) and TRAIN_AND_EVALUATE.input_keys == ()
    assert not hasattr(runtime, "STEPS")


def test_the_step_cli_reports_a_permanent_error_on_its_marked_line(tmp_path):
    cli = Path(sys.executable).parent / "loopline"
    done = subprocess.run([str(cli), "step", "nope", "--input", "{}"], capture_output=True, text=True)
    assert done.returncode == runtime.PERMANENT_EXIT
    assert done.stdout.strip().splitlines()[-1].startswith(f"{runtime.ERROR_MARK}UnknownStep: unknown step 'nope'")


def test_a_spec_copy_with_a_runtime_builds_its_step(tmp_path):
    raw = yaml.safe_load((MODELS / "credit_risk" / "spec.yaml").read_text())
    raw["runtime"] = {"image": "localhost/loopline:test"}
    (tmp_path / "credit_risk").mkdir()
    (tmp_path / "credit_risk" / "spec.yaml").write_text(yaml.safe_dump(raw))
    load_spec.cache_clear()
    op = step_in_image(load_spec("credit_risk", tmp_path), SCORE, {"model": "credit_risk"})
    assert op.image == "localhost/loopline:test" and op.task_id == "score" and "payload" in op.template_fields
