"""One line per model: which model folders the DAG files generate DAGs for.

Every DAG file in ``dags/`` is a template for one station; it asks ``models_for(station)``
for the model specs to build a DAG of that station for. DAG ids read ``<model>_<station>``
(``<model>_ingest``, ``<model>_train``, ...), so the UI lists each model's line
together. During a task run Airflow's parsing context names the one DAG needed, and only
that model's spec is read (Airflow's documented dynamic-DAG pattern).

A model folder whose spec does not load is left out of every station file, so it never
hides the other models' DAGs; ``dags/loopline_model_folders.py`` raises it as the import
error that names the folder and the field.
"""

from __future__ import annotations

from pathlib import Path

from loopline.core.spec import ModelSpec, SpecError, load_spec

STATIONS = ("ingest", "train", "rollout", "rollout_control", "drift", "batch_score")


def dag_id(model: str, station: str) -> str:
    if station not in STATIONS:
        raise ValueError(f"unknown station {station!r}; expected one of {STATIONS}")
    return f"{model}_{station}"


def station_of(dag_id_: str) -> tuple[str, str] | None:
    """(model, station) of a generated DAG id, or None for other DAGs."""
    for station in sorted(STATIONS, key=len, reverse=True):  # rollout_control before rollout
        if dag_id_.endswith(f"_{station}") and len(dag_id_) > len(station) + 1:
            return dag_id_[: -len(station) - 1], station
    return None


def model_folders(models_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in models_dir.glob("*/spec.yaml")) if models_dir.is_dir() else []


def discover(models_dir: Path) -> tuple[list[ModelSpec], dict[str, str]]:
    """Every model folder's spec, and the folders whose spec is broken (name -> what to fix)."""
    good, broken = [], {}
    for name in model_folders(models_dir):
        try:
            good.append(load_spec(name, models_dir))
        except SpecError as err:
            broken[name] = str(err)
    return good, broken


def _parsing_dag_id() -> str | None:
    try:
        from airflow.sdk import get_parsing_context
    except ImportError:  # outside Airflow (unit tests of this module)
        return None
    return get_parsing_context().dag_id


def models_for(station: str, models_dir: Path | None = None) -> list[ModelSpec]:
    """The specs to build this station's DAGs for: all loadable models, or only the one a task run needs."""
    if models_dir is None:
        from loopline.core.settings import get_settings

        models_dir = get_settings().models_dir
    wanted = _parsing_dag_id()
    parsed = station_of(wanted) if wanted else None
    if parsed is not None:
        model, wanted_station = parsed
        if wanted_station != station or model not in model_folders(models_dir):
            return []
        try:
            return [load_spec(model, models_dir)]
        except SpecError:
            return []
    return discover(models_dir)[0]


def broken_model_folders(models_dir: Path | None = None) -> list[str]:
    """One line per model folder whose spec does not load, whatever the parsing context.

    Also when the context names one DAG: ``airflow dags test <model>_train`` parses the whole
    folder with the context set to that DAG and writes the parse's import errors to the DB. Were
    this file quiet then, the user of a broken folder would read only "could not be found", and a
    test of any other model would clear the error that ``airflow dags list-import-errors`` and the
    UI show. So the parse that cannot find ``broken_train`` logs the folder and field just above
    that message and records it. The cost stays where it is paid already: a task run parses only
    its own DAG's file, never this one (``bench/dag_parse_bench.py``, task start-up).

    Not chosen: a stand-in DAG per broken folder whose one task fails with the spec error. It
    would name the error in ``dags test`` too, but it puts DAGs that can only fail into the UI and
    the scheduler, under ids a later fixed spec takes over with a failed run history, and it
    needs the folder's name to be a valid DAG id, which a broken spec cannot promise.
    """
    if models_dir is None:
        from loopline.core.settings import get_settings

        models_dir = get_settings().models_dir
    return [f"models/{name}: {why}" for name, why in discover(models_dir)[1].items()]
