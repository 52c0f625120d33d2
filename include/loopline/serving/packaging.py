"""Package a registered model version as a Bento (BentoML 1.4).

Two steps, as BentoML recommends: import the MLflow model into the BentoML
model store, then build the Bento from ``models/<name>/service.py`` if the model has one, else from
the platform's ``loopline/bento_service.py``. The build
context is assembled in a scratch folder (the service, its spec, its features.py and the
``loopline`` package), so the Bento carries the exact feature code training used.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from loopline.core.features import FEATURES_FILE
from loopline.core.settings import Settings, apply_library_env

# Packages the service needs at run time, pinned like requirements.txt (a test keeps them in step).
SERVICE_PACKAGES = (
    "lightgbm", "mlflow", "numpy", "orjson", "pandas", "prometheus-client", "pydantic", "pyyaml", "scikit-learn",
    "sqlalchemy",
)  # fmt: skip
BENTO_TAG = "loopline.bento_tag"
# The feature repo travels inside the Bento (beside spec.yaml): the Bento's settings find it at <src>/feature_repo.
FEATURE_REPO_DIR = "feature_repo"
MODEL_PIN_FILE = "bento_model.json"


def _pinned(requirements: Path, names: tuple[str, ...]) -> list[str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _ = line.split("==", 1)
            pins[name.strip().lower()] = line
    missing = [n for n in names if n not in pins]
    if missing:
        raise RuntimeError(f"{requirements} does not pin {missing}")
    return [pins[n] for n in names]


def build_context(model_name: str, settings: Settings, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    model_dir = settings.models_dir / model_name
    dest.mkdir(parents=True)
    own = model_dir / "service.py"  # a model may bring its own service; otherwise the platform's serves it
    shutil.copy2(own if own.is_file() else Path(__file__).with_name("bento_service.py"), dest / "service.py")
    shutil.copy2(model_dir / "spec.yaml", dest / "spec.yaml")
    if (model_dir / FEATURES_FILE).is_file():  # the model's feature code: the service loads it from beside itself
        shutil.copy2(model_dir / FEATURES_FILE, dest / FEATURES_FILE)
    shutil.copytree(
        settings.project_root / "include" / "loopline", dest / "loopline", ignore=shutil.ignore_patterns("__pycache__")
    )
    if settings.feature_repo.is_dir():  # the feature definitions as built: the service reads its views by them
        shutil.copytree(
            settings.feature_repo, dest / FEATURE_REPO_DIR, ignore=shutil.ignore_patterns("__pycache__", ".*")
        )
    return dest


def build_bento(model_name: str, version: str, settings: Settings) -> str:
    """Import version ``version`` of the registered model and build its Bento; returns the Bento tag.

    Idempotent: a version whose Bento was already built (tag recorded on the
    model version, Bento still in the store) is not rebuilt.
    """
    apply_library_env(settings)
    import bentoml
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    recorded = client.get_model_version(model_name, version).tags.get(BENTO_TAG)
    if recorded:
        try:
            bentoml.bentos.get(recorded)
            return recorded
        except bentoml.exceptions.NotFound:
            pass
    bento_model = bentoml.mlflow.import_model(
        model_name,
        model_uri=f"models:/{model_name}/{version}",
        labels={"mlflow_model_version": version, "owner": "loopline"},
        metadata={"mlflow_model_version": version},
    )
    ctx = build_context(model_name, settings, settings.work_dir / "bento-build" / f"{model_name}-v{version}")
    # Pin the exact model in the Bento itself: "<name>:latest" would resolve against whatever
    # model store the server sees at run time, which may hold newer versions.
    (ctx / MODEL_PIN_FILE).write_text(json.dumps({"tag": str(bento_model.tag), "mlflow_model_version": version}))
    sys.modules.pop("service", None)  # BentoML imports "service" by name: never reuse an earlier build's
    bento = bentoml.bentos.build(
        "service:ModelService",
        name=model_name.replace("_", "-"),
        version=f"v{version}-{bento_model.tag.version}",
        labels={"mlflow_model_version": version, "model": model_name},
        description=f"Loopline {model_name}, MLflow model version {version}",
        include=[
            "service.py",
            "spec.yaml",
            FEATURES_FILE,
            MODEL_PIN_FILE,
            "loopline/**/*.py",
            f"{FEATURE_REPO_DIR}/**/*",
        ],
        # Already pinned from requirements.txt: no need for BentoML to re-lock against PyPI.
        python={
            "packages": _pinned(settings.project_root / "requirements.txt", SERVICE_PACKAGES),
            "lock_packages": False,
        },  # noqa: E501
        models=[str(bento_model.tag)],
        build_ctx=str(ctx),
    )
    tag = str(bento.tag)
    client.set_model_version_tag(model_name, version, BENTO_TAG, tag)
    return tag
