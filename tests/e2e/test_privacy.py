"""No entity id in clear in any store a run writes, except where the raw data itself legitimately lives.

Runs last among the e2e modules (conftest MODULE_ORDER), on the state everything before it left
(ingests, trainings, rollouts, drift checks, prediction logs); run alone it builds a small line
first. It adds the cases that put ids at risk: a batch failing the suite on the entity-id column
(duplicate and missing ids → quarantine report), a dataset whose batches pass one by one but
together repeat ids (→ the train DAG's failed validation, ``validation/ge_result.json`` in MLflow,
the task's exception in the Airflow logs and DB), and predictions through the real service.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path

import pytest

from loopline.core.settings import get_settings
from loopline.ingestion.data_registry import DataRegistry
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow
MODEL = "credit_risk"
# What every generated id looks like (datagen.make_batch: A<seed>-<week>-<row>): the scan looks for the
# shape, so it also catches ids no test here knows of (other modules' service traffic).
ID_SHAPE = re.compile(rb"A\d{3,}-\d{4,}-\d{7}")
BATCH_FILES = (".csv", ".parquet")


def allowed(relative: Path) -> str | None:
    """Why raw ids may be at this path (relative to LOOPLINE_HOME), or None: it must hold none.

    The allow-list is the raw data and nothing else:
    - ``landing/``, ``processing/``, ``quarantine/``, ``archive/``: the batch files themselves
      (``*.csv``, ``*.parquet``), untouched by design; *not* the reports and claim records beside
      them (``validation.json``/``.txt`` ...), which are scanned;
    - ``data-registry/data/`` (the dataset's working copy), ``data-registry/.dvc/cache/`` and
      ``dvc-remote/``: the DVC data registry holds the dataset, which is the raw data;
    - ``work/data/``: training's cache of pulled dataset versions (a copy of the registry's data);
    - ``scores/<dataset>/<run>/scores.parquet``: batch scoring's result, one score per applicant the
      caller sent, keyed by the caller's own id (its ``lineage.json`` is scanned).
    Everything else (MLflow DB and artifacts, the serving/monitoring state DB, the Airflow DB and
    task logs, the prediction log, drift reports and detectors, BentoML's store, the registry's git
    history and manifests) must not contain an id in clear.
    """
    parts = relative.parts
    top = parts[0] if parts else ""
    if top in ("landing", "processing", "quarantine", "archive") and relative.suffix in BATCH_FILES:
        return "a batch file"
    if top == "dvc-remote":
        return "the DVC remote"
    if top == "data-registry" and len(parts) > 1 and (parts[1] == "data" or parts[1:3] == (".dvc", "cache")):
        return "the DVC data registry's data"
    if parts[:2] == ("work", "data"):
        return "pulled dataset versions"
    if top == "scores" and relative.name == "scores.parquet":
        return "batch scores for the caller"
    return None


def contents(path: Path) -> list[bytes]:
    """The file's bytes, plus what is inside it where it is compressed (parquet, gzip, zip/npz)."""
    raw = path.read_bytes()
    found = [raw]
    try:
        if raw[:4] == b"PAR1":
            import pandas as pd

            found.append(pd.read_parquet(path).to_csv(index=False).encode())
        elif raw[:2] == b"\x1f\x8b":
            found.append(gzip.decompress(raw))
        elif raw[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:
                found.extend(archive.read(name) for name in archive.namelist())
    except Exception as err:  # an unreadable container is a finding too: it cannot be checked
        found.append(f"UNREADABLE {type(err).__name__}".encode())
    return found


def scan(home: Path) -> tuple[dict[str, list[str]], int]:
    """Files (outside the allow-list) holding id-shaped strings, with a few of them; and how many were read."""
    leaks: dict[str, list[str]] = {}
    scanned = 0
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(home)
        if allowed(relative):
            continue
        scanned += 1
        for blob in contents(path):
            hits = sorted({m.decode() for m in ID_SHAPE.findall(blob)})
            if hits or blob.startswith(b"UNREADABLE"):
                leaks.setdefault(str(relative), []).extend(hits[:3] or [blob[:40].decode()])
    return leaks, scanned


def registry() -> DataRegistry:
    s = get_settings()
    return DataRegistry(s.data_registry, s.dvc_remote_url)


@pytest.fixture(scope="module")
def line(run_dag, zones):
    """A line with a champion: what the earlier modules left, or a small one built here (run alone)."""
    zones.landing.mkdir(parents=True, exist_ok=True)
    if not registry().versions(MODEL):
        for week in range(4):
            datagen.write_batch(datagen.make_batch(week, n_rows=800, seed=1), zones.landing / f"w{week}.csv")
        assert run_dag("credit_risk_ingest").state == "success"
        trained = run_dag("credit_risk_train", conf={"data_version": "latest", "reason": "privacy scan bootstrap"})
        assert trained.state == "success"
    return zones


def test_a_batch_with_repeated_and_missing_ids_is_quarantined_with_pseudonyms(run_dag, line):
    frame = datagen.make_batch(42, n_rows=200, seed=9)
    frame.loc[1:3, "applicant_id"] = frame.loc[0, "applicant_id"]
    frame.loc[5, "applicant_id"] = None
    datagen.write_batch(frame, line.landing / "dupes.csv")
    assert run_dag("credit_risk_ingest").state == "success"
    folder = next(p for p in line.quarantine.iterdir() if p.name.startswith("dupes"))
    report = json.loads((folder / "validation.json").read_text())
    failed = {f["expectation"] for f in report["failures"] if f["column"] == "applicant_id"}
    assert failed == {"expect_column_values_to_be_unique", "expect_column_values_to_not_be_null"}
    assert frame.loc[0, "applicant_id"] not in json.dumps(report) + (folder / "validation.txt").read_text()


def test_a_dataset_repeating_ids_across_batches_fails_training_validation_with_pseudonyms(run_dag, line):
    """Ingest refuses a batch that repeats stored ids (its report pseudonymised); a registry that holds such
    rows anyway (written before that rule, or by hand) stops training at validate_data, again without ids."""
    from loopline.core.spec import load_spec
    from loopline.ingestion.data_registry import BatchRecord
    from loopline.ingestion.ingest import normalise

    first = datagen.make_batch(40, n_rows=300, seed=9)  # weeks in the past: no future timestamps
    again = datagen.make_batch(41, n_rows=300, seed=9).assign(applicant_id=first["applicant_id"])
    datagen.write_batch(first, line.landing / "a-first.csv")  # claimed and checked in name order
    datagen.write_batch(again, line.landing / "b-again.csv")
    assert run_dag("credit_risk_ingest").state == "success"
    refused = next(p for p in line.quarantine.iterdir() if p.name.startswith("b-again"))
    report = (refused / "validation.json").read_text() + (refused / "validation.txt").read_text()
    assert "loopline_expect_unique_key_to_be_new_to_dataset" in report and not ID_SHAPE.search(report.encode())
    spec = load_spec(MODEL, get_settings().models_dir)
    record = BatchRecord("again-by-hand", "f" * 64, "again.csv", len(again), "privacy test")
    assert registry().commit_batches(MODEL, [(record, normalise(again, spec))], "written around ingest")
    # data_version explicitly: dag.test() keeps an earlier run's conf as the DAG's param defaults
    dr = run_dag("credit_risk_train", conf={"data_version": "latest", "reason": "privacy scan: repeated ids"})
    assert dr.state == "failed"
    from loopline.core import tracking

    client = tracking.client_for(get_settings())
    run = client.search_runs(
        [client.get_experiment_by_name(MODEL).experiment_id],
        "tags.loopline.data_validation = 'failed'",
        max_results=1,
    )[0]
    import mlflow

    result = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/validation/ge_result.json")
    unique = next(f for f in result["failures"] if f["expectation"] == "expect_column_values_to_be_unique")
    assert "600 of" in unique["detail"]  # both copies of the 300 applicants
    assert not ID_SHAPE.search(json.dumps(result).encode())


def test_predictions_through_the_service_log_pseudonyms(line):
    import requests

    from loopline.core import tracking
    from tests.e2e.conftest import BentoServer

    client = tracking.client_for(get_settings())
    champion = client.get_model_version_by_alias(MODEL, "champion")
    server = BentoServer(champion.tags["loopline.bento_tag"])
    try:
        batch = datagen.make_batch(53, n_rows=60, seed=9).drop(columns=["applied_at", "defaulted"])
        payload = {"instances": json.loads(batch.to_json(orient="records"))}
        response = requests.post(f"{server.url}/predict", json=payload, timeout=60)
        assert response.status_code == 200, response.text
        assert not ID_SHAPE.search(response.content)  # the response names the request, not the applicant
    finally:
        server.stop()


def test_no_store_holds_an_entity_id_in_clear(line):
    """Every file under LOOPLINE_HOME, read as bytes (SQLite DBs and their journals included, compressed
    containers opened), outside the allow-list of `allowed()`: not one id-shaped string."""
    home = get_settings().home
    leaks, scanned = scan(home)
    assert not leaks, f"entity ids in clear in {len(leaks)} of {scanned} files:\n" + "\n".join(
        f"  {path}: {hits}" for path, hits in sorted(leaks.items())
    )
    stores = {p.relative_to(home).parts[0] for p in home.rglob("*") if p.is_file()}
    assert {"mlflow", "airflow", "predictions", "quarantine", "state.db"} <= stores  # the scan saw them
    # and the allow-list is not empty-handed: the raw data really is where it says
    assert any(ID_SHAPE.search(b) for p in (home / "quarantine").rglob("*.csv") for b in contents(p))
    assert any(ID_SHAPE.search(b) for p in (home / "dvc-remote").rglob("*") if p.is_file() for b in contents(p))


def test_the_scan_finds_ids_in_plain_and_compressed_files_outside_the_allow_list(tmp_path):
    """The scanner itself, on planted files: a clean result above means something."""
    import pandas as pd

    leak = b'{"partial_unexpected_list": ["A009-0050-0000000"]}'
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "ge_result.json").write_bytes(leak)
    (tmp_path / "airflow" / "logs").mkdir(parents=True)
    (tmp_path / "airflow" / "logs" / "attempt=1.log.gz").write_bytes(gzip.compress(leak))
    (tmp_path / "monitoring").mkdir()
    pd.DataFrame({"id": ["A009-0050-0000001"]}).to_parquet(tmp_path / "monitoring" / "reference.parquet")
    (tmp_path / "quarantine" / "b1").mkdir(parents=True)
    (tmp_path / "quarantine" / "b1" / "dupes.csv").write_bytes(b"applicant_id\nA009-0050-0000000\n")  # allowed
    (tmp_path / "quarantine" / "b1" / "validation.json").write_bytes(b'{"ok": "f40084ef1d6e640e"}')  # clean
    leaks, scanned = scan(tmp_path)
    assert set(leaks) == {"mlflow/ge_result.json", "airflow/logs/attempt=1.log.gz", "monitoring/reference.parquet"}
    assert scanned == 4
