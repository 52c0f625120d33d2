"""One feature pipeline DAG per feature view: which views, and what schedules them (read at parse time).

Like ``loopline.core.dag_factory`` for the model lines: ``dags/feature_pipelines.py`` asks
``views_for()`` for the views to build a ``feature_<view>`` DAG for; during a task run Airflow's
parsing context names the one DAG needed and only that view is built. A file of the feature
repo that does not load (or a refused view) leaves only its own views out; ``dags/feature_repo.py``
raises it as the import error that names the file and field. Only YAML is read here: no Feast,
no pandas.
"""

from __future__ import annotations

from pathlib import Path

from loopline.features.definitions import Definitions, FeatureViewDef, load_definitions

PREFIX = "feature_"


def dag_id(view: str) -> str:
    return f"{PREFIX}{view}"


def _repo(feature_repo: Path | None) -> Path:
    if feature_repo is not None:
        return feature_repo
    from loopline.core.settings import get_settings

    return get_settings().feature_repo


def _parsing_dag_id() -> str | None:
    try:
        from airflow.sdk import get_parsing_context
    except ImportError:  # outside Airflow
        return None
    return get_parsing_context().dag_id


def views_for(feature_repo: Path | None = None) -> tuple[list[FeatureViewDef], Definitions]:
    """The loaded views to build a pipeline DAG for (all, or only the one a task run needs), stable order."""
    defs = load_definitions(_repo(feature_repo))
    wanted = _parsing_dag_id()
    views = [defs.views[name] for name in sorted(defs.views)]
    if wanted is not None:
        views = [v for v in views if dag_id(v.name) == wanted]
    return views, defs


def broken_feature_files(feature_repo: Path | None = None) -> list[str]:
    """One line per refused file or definition of the feature repo, whatever the parsing context."""
    return load_definitions(_repo(feature_repo)).errors


def source_assets_of(view: FeatureViewDef, models_dir: Path | None = None) -> list[str]:
    """The models whose ingest announces the view's dataset (their ``<model>_dataset`` Asset), by name.

    The ingest DAG of a model announces its dataset Asset under the model's name; a view names the
    registry dataset, so every model whose ``dataset.name`` is that dataset schedules the view. No
    model: the Asset named after the dataset itself (what an ingest of that name would announce).
    """
    if view.source.dataset is None:
        return []
    from loopline.core.dag_factory import discover

    if models_dir is None:
        from loopline.core.settings import get_settings

        models_dir = get_settings().models_dir
    models = [spec.name for spec in discover(models_dir)[0] if spec.dataset.name == view.source.dataset]
    return models or [view.source.dataset]


def views_used_by_model(stored: list[str]) -> list[str]:
    """The views a model's ``features.stored`` names, sorted, once each (its train DAG listens to them)."""
    from loopline.features.definitions import parse_ref

    return sorted({parse_ref(ref)[0] for ref in stored})
