"""``loopline``: the one command-line entry point (Makefile, dvc.yaml stages and people use it)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Loopline: an ML production line on Apache Airflow.", no_args_is_help=True, add_completion=False)


def _which_model(name: str | None) -> str:
    """The model a command is about: the one named, or the only model folder there is; its spec must load.

    Every command taking ``--model`` goes through here, so a broken spec stops each of them the
    same way: the spec error's one line (file and field) and exit code 2, never a traceback.
    """
    from loopline.core.dag_factory import discover

    if not name:
        good, broken = discover(_settings().models_dir)
        names = sorted([spec.name for spec in good] + list(broken))
        if len(names) != 1:
            raise typer.BadParameter(
                f"which model? pass --model with one of {names}" if names else "there is no model folder"
            )
        name = names[0]
    _check_spec(name)
    return name


def _check_spec(name: str) -> None:
    """Exit 2 with the spec error's one line if ``models/<name>/spec.yaml`` is missing or invalid."""
    from loopline.core.spec import SpecError, load_spec

    try:
        load_spec(name, _settings().models_dir)
    except SpecError as err:
        typer.secho(f"model {name}: {err}", fg="red", err=True)
        raise typer.Exit(2) from None


MODEL_OPTION = typer.Option(
    None,
    "--model",
    "-m",
    callback=_which_model,
    help="Model name (a folder under models/); needed if there are several.",
)


def _settings():
    from loopline.core.settings import SettingsError, apply_library_env, get_settings

    try:
        return apply_library_env(get_settings())
    except SettingsError as err:
        typer.secho(f"configuration error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None


def _generator(model: str):
    from loopline.core.spec import SpecError, load_spec
    from loopline.ops.demo_data import NoGenerator, load_generator

    try:
        spec = load_spec(model, _settings().models_dir)
        return load_generator(spec.model_dir), spec
    except (SpecError, NoGenerator) as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def env() -> None:
    """Print `export` lines for Airflow, MLflow and BentoML (use: eval "$(loopline env)")."""
    from loopline.core.settings import get_settings

    for key, value in get_settings().as_env().items():
        print(f"export {key}={json.dumps(value)}")


@app.command()
def init() -> None:
    """Create the state folder, the pseudonym secret and the DVC data registry (idempotent)."""
    from loopline.core.settings import PSEUDONYM_SECRET_FILE, ensure_dirs
    from loopline.ingestion.data_registry import DataRegistry

    settings = ensure_dirs(_settings())
    settings.pseudonym_secret  # noqa: B018 (generated once, mode 0600, unless LOOPLINE_PSEUDONYM_SECRET is set)
    DataRegistry(settings.data_registry, settings.dvc_remote_url).init()
    secret = "LOOPLINE_PSEUDONYM_SECRET" if settings.pseudonym_secret_env else settings.home / PSEUDONYM_SECRET_FILE
    typer.echo(
        f"state in {settings.home}; data registry {settings.data_registry} -> remote {settings.dvc_remote_url};"
        f" pseudonym secret from {secret}"
    )
    if _airflow_db_ready(settings):  # `make up` and the stack's airflow-init run init after `airflow db migrate`
        _report_dead_runs(settings, grace_seconds=300.0, dry_run=False)


def _airflow_db_ready(settings) -> bool:
    """An Airflow metadata DB to look at: a migrated SQLite file, or a server database (checked on use)."""
    uri = settings.airflow_db_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def _report_dead_runs(settings, grace_seconds: float, dry_run: bool) -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from loopline.ops.dead_runs import fail_dead_test_runs

    try:
        dead = fail_dead_test_runs(settings, grace_seconds, dry_run)
    except (OperationalError, ProgrammingError) as err:  # not migrated yet: nothing can be running
        typer.echo(f"Airflow DB not ready, no runs checked ({type(err).__name__})")
        return
    for run in dead:
        typer.echo(f"{'would mark' if dry_run else 'marked'} failed: {run.line()}")


@app.command("api-key")
def api_key(client: str = typer.Argument(..., help="The client's name, logged with each of its predictions.")) -> None:
    """Make a prediction-API key for CLIENT: prints the key (give it to the client) and its LOOPLINE_API_KEYS entry."""
    from loopline.core.api_keys import ApiKeyError, new_key

    try:
        key, entry = new_key(client)
    except ApiKeyError as err:
        raise typer.BadParameter(str(err)) from None
    print(f"key for {client} (shown once; only its hash is stored): {key}")
    print(f"add to LOOPLINE_API_KEYS (comma separated): {entry}")


@app.command("fail-dead-runs")
def fail_dead_runs(
    grace_seconds: float = typer.Option(300.0, min=0, help="A run that never started a task is judged after this."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list them."),
) -> None:
    """Mark failed the in-process runs (dag.test, `airflow dags test`) whose process is gone (init does it too)."""
    settings = _settings()
    if not _airflow_db_ready(settings):
        typer.echo(f"no Airflow DB at {settings.airflow_db_uri}")
        return
    _report_dead_runs(settings, grace_seconds, dry_run)


@app.command()
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Remove ALL embedded state (Airflow DB, MLflow, DVC registry and remote, Bentos, landing zone)."""
    from loopline.core.settings import get_settings

    home = get_settings().home
    if not yes and not typer.confirm(f"Delete {home} and everything in it?"):
        raise typer.Exit(1)
    shutil.rmtree(home, ignore_errors=True)
    typer.echo(f"removed {home}")


@app.command()
def generate(
    weeks: str = typer.Option("0-3", help="Week range 'A-B' (inclusive) or a single week."),
    rows: int = typer.Option(1000, min=1, max=2_000_000, help="Rows per weekly batch (the suite's maximum)."),
    seed: int = typer.Option(0),
    covariate_shift: float = typer.Option(0.0, min=0.0, max=3.0),
    concept_shift: float = typer.Option(0.0, min=0.0, max=3.0),
    unlabelled: bool = typer.Option(False, help="Withhold labels (label delay)."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out: Path | None = typer.Option(None, help="Folder; default: the model's landing zone."),
    ending_now: bool = typer.Option(
        False, help="Move the weeks (whole days) so the last ends now: fresh values for the online store."
    ),
    model: str = MODEL_OPTION,
) -> None:
    """Drop generated weekly batches into the model's landing zone (its generator.py makes them)."""
    datagen, spec = _generator(model)

    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("--format must be csv or parquet")
    first, _, last = weeks.partition("-")
    try:
        span = range(int(first), int(last or first) + 1)
    except ValueError:
        raise typer.BadParameter(f"--weeks {weeks!r} is not 'A-B' or a number") from None
    folder = out or _settings().landing_dir / spec.dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    drift = datagen.DriftKnobs(covariate_shift=covariate_shift, concept_shift=concept_shift)
    days = 0
    if ending_now:
        import pandas as pd

        from loopline.ops.demo_data import days_to_now

        days = days_to_now(span[-1], pd.Timestamp.now(tz="UTC"))
        typer.echo(f"weeks {weeks} moved {days} days later: week {span[-1]} ends in the last 24 hours")
    for week in span:
        frame = datagen.make_batch(week, n_rows=rows, seed=seed, drift=drift, with_labels=not unlabelled)
        if days:
            from loopline.ops.demo_data import shift_days

            frame = shift_days(frame, spec.dataset.timestamp, days)
        path = datagen.write_batch(frame, folder / f"{spec.dataset.name}_w{week:03d}_s{seed}.{fmt}")
        typer.echo(f"wrote {path} ({len(frame)} rows)")


@app.command()
def malformed(
    kinds: list[str] = typer.Argument(None, help="Kinds to write; default: all."),
    out: Path | None = typer.Option(None, help="Folder; default: the model's landing zone."),
    model: str = MODEL_OPTION,
) -> None:
    """Drop malformed batches (wrong dtype, missing column, out of range, empty, unparseable)."""
    datagen, spec = _generator(model)
    if not hasattr(datagen, "write_malformed"):
        raise typer.BadParameter(f"the generator of {model} makes no malformed batches")
    folder = out or _settings().landing_dir / spec.dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    for kind in kinds or datagen.MALFORMED_KINDS:
        try:
            path = datagen.write_malformed(kind, folder / f"malformed_{kind}.csv")
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        typer.echo(f"wrote {path}")


@app.command()
def status(
    model: str | None = typer.Option(None, "--model", "-m", help="One model's line; default: every model folder."),
) -> None:
    """What the line holds: data versions, model versions and aliases, Bentos, landing zone, quarantine."""
    from loopline.core.dag_factory import discover
    from loopline.ops.status import describe

    settings = _settings()
    if model:
        _check_spec(model)
        typer.echo(describe(model, settings))
        return
    good, broken = discover(settings.models_dir)
    typer.echo("\n\n".join(describe(spec.name, settings) for spec in good))
    for name, why in broken.items():
        typer.echo(f"\n== {name}: BROKEN model folder, no DAGs generated\n  {why}")


@app.command()
def features(
    repo: Path | None = typer.Option(None, "--repo", help="The feature repo; default: feature_repo/ in the project."),
) -> None:
    """Feature views: owner, schedule, last materialisation, freshness, the models that use each; refused ones."""
    from loopline.ops.feature_views import gather_feature_views, when_text

    found = gather_feature_views(_settings(), repo)
    typer.echo(f"{len(found.views)} feature view(s), {found.entities} entit(ies) in {found.repo}")
    for view in found.views:
        typer.echo(
            f"  {view.name}  owner {view.owner}  entities {', '.join(view.entities)}  ttl {view.ttl}"
            f"  schedule {view.schedule}  {'online' if view.online else 'offline only'}  {view.file}"
        )
        typer.echo(f"    features: {', '.join(view.features)}")
        if view.online:
            typer.echo(f"    last materialisation: {when_text(view.last_materialized)}  freshness: {view.freshness}")
        typer.echo(f"    used by: {', '.join(view.used_by) or '-'}")
    for why in found.errors:
        typer.secho(f"  NOT READ {why}", fg="yellow")
    for why in found.refused:
        typer.secho(f"  REFUSED {why}", fg="red")
    for line in found.problems:
        typer.secho(f"  MODEL {line}", fg="red")
    if found.refused or found.problems:
        raise typer.Exit(1)


quarantine_app = typer.Typer(
    help="Quarantined batches: list them with their cause; replay them through validation after a fix.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(model: str = MODEL_OPTION) -> None:
    """Every quarantined batch (file drops and SQL slices), oldest first, with the cause its report names."""
    from loopline.ingestion.ingest import quarantined_batches

    found = quarantined_batches(model, _settings())
    typer.echo(f"{model}: {len(found)} batch(es) in quarantine" + (":" if found else ""))
    for batch in found:
        typer.echo(f"  {batch.line()}")


@quarantine_app.command("replay")
def quarantine_replay(
    batches: list[str] = typer.Argument(None, help="Batch ids (loopline quarantine list); default: every one."),
    rename: list[str] = typer.Option(
        None, "--rename", help="OLD=NEW: read the file's column OLD as NEW (a column renamed upstream); repeatable."
    ),
    model: str = MODEL_OPTION,
) -> None:
    """Validate quarantined batches again after a fix (suite, spec, --rename): passing ones are versioned once."""
    import getpass

    from loopline.core.errors import LooplineError
    from loopline.ingestion.ingest import replay

    try:
        outcomes = replay(model, _settings(), batches or None, rename or [], getpass.getuser())
    except LooplineError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2) from None
    if not outcomes:
        typer.echo(f"{model}: nothing in quarantine")
    for o in outcomes:
        if o.status in ("versioned", "duplicate"):
            typer.echo(f"{o.batch_id}: {o.status}" + (f" ({'; '.join(o.notes)})" if o.notes else ""))
        else:
            typer.echo(f"{o.batch_id}: still fails, back in quarantine: {o.summary.splitlines()[0]}")
    still = [o for o in outcomes if o.status not in ("versioned", "duplicate")]
    if any(o.status == "versioned" for o in outcomes):
        typer.echo(f"the next {model}_ingest run announces the new data version (which triggers training)")
    if still:
        raise typer.Exit(1)


@app.command()
def onboard(
    name: str = typer.Argument(..., help="The new model's name (lower-case, digits, _): its folder under models/."),
    sample: Path = typer.Option(..., "--sample", exists=True, dir_okay=False, help="A CSV or Parquet sample."),
    target: str = typer.Option(
        ..., "--target", help="The column to predict (0/1: binary; a number: regression; a few labels: multiclass)."
    ),
    timestamp: str = typer.Option(..., "--timestamp", help="The column with each row's time (ISO 8601)."),
    entity_id: str = typer.Option(..., "--entity-id", help="The column that identifies a row's subject."),
    task: str | None = typer.Option(
        None, "--task", help="binary, regression or multiclass (default: inferred from the target)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing spec and suite."),
) -> None:
    """Write models/NAME/spec.yaml and expectations/NAME_batch.json from a sample table, for review."""
    from loopline.ops.onboarding import onboard as write

    settings = _settings()
    spec_file, suite_file = write(
        name, sample, target, timestamp, entity_id, settings.models_dir, settings.expectations_dir, task, force
    )
    typer.echo(f"wrote {spec_file}\nwrote {suite_file}")
    typer.echo(
        "review both (each chosen value says how it was chosen), then commit them (git add models/"
        f"{name} expectations/{suite_file.name}; git commit): a model trained from uncommitted files is recorded"
        " as code_dirty and `loopline reproduce` cannot replay it from its commit"
    )
    typer.echo(f"review both, then drop batches into {settings.landing_dir / name}/ (loopline status -m {name})")


def serving_line(route) -> str:
    """``champion v1, canary v2 at 20%`` / ``champion v1, shadow v2``: only the arms that serve."""
    canary = f", canary v{route.canary_version} at {route.canary_weight:.0%}" if route.canary_version else ""
    shadow = f", shadow v{route.shadow_version} (scores a copy, answers nothing)" if route.shadow_version else ""
    return f"champion v{route.champion_version}{canary}{shadow}"


@app.command()
def audit(model: str = MODEL_OPTION, limit: int = typer.Option(50, min=1, max=10_000)) -> None:
    """The audit trail: every change to what serves traffic, newest first, with who and why."""
    from loopline.core.serving_state import ServingState

    state = ServingState(_settings().state_db_uri)
    route = state.route(model)
    typer.echo(f"{model} now: {serving_line(route)}")
    for record in state.trail(model, limit):
        typer.echo(record.line())


@app.command()
def rollouts(model: str = MODEL_OPTION, limit: int = typer.Option(10, min=1, max=1000)) -> None:
    """Rollouts, newest first: candidate, mode, outcome and every judged step's gates."""
    from loopline.core.serving_state import ServingState

    for r in ServingState(_settings().state_db_uri).rollouts(model, limit):
        typer.echo(
            f"#{r.id} v{r.candidate_version} vs champion v{r.champion_version} [{r.mode}] {r.status.upper()}"
            f" started {r.started_at:%Y-%m-%d %H:%M:%S} by {r.trigger}"
        )
        for result in r.gate_results:
            gates = ", ".join(f"{g['name']}={g['status']}" for g in result["gates"])
            what = "shadow" if result.get("phase") == "shadow" else f"step {result['step']:.0%}"
            typer.echo(f"    {what}: {result['status']} ({result['reason']}) [{gates}]")
        if r.outcome:
            typer.echo(f"    outcome: {r.outcome}")


@app.command("drift-status")
def drift_status(model: str = MODEL_OPTION, limit: int = typer.Option(10, min=1, max=1000)) -> None:
    """The latest drift verdicts: window size, drift share, score PSI, whether a retrain was triggered."""
    from loopline.monitoring.monitoring_state import MonitoringState

    checks = MonitoringState(_settings().state_db_uri).latest(model, limit)
    if not checks:
        typer.echo(f"no drift checks recorded for {model} yet")
    for check in checks:
        typer.echo(check.line())


@app.command("ingest-outcomes")
def ingest_outcomes(model: str = MODEL_OPTION) -> None:
    """Take in delayed outcome labels waiting in landing/<dataset>_outcomes/ (what the drift DAG does first)."""
    from loopline.monitoring.feedback import ingest_outcomes

    typer.echo(json.dumps(ingest_outcomes(model, _settings()), indent=2))


@app.command()
def simulate(
    weeks: int = typer.Option(8, min=2, max=52, help="Simulated weeks after the 4 bootstrap weeks."),
    shift_week: int = typer.Option(8, min=5, help="First week of the shifted world (weeks count from 4)."),
    rows: int = typer.Option(1000, min=500, max=50_000, help="Applicants per week."),
    seed: int = typer.Option(7),
    model: str = MODEL_OPTION,
) -> None:
    """Weeks of compressed time through the real DAGs: stable, then a shift; prints a timeline, saves a plot.

    Needs a fresh state (`loopline reset --yes`) and the Airflow DB (`airflow db migrate`); `make simulate` does both.
    """
    from loopline.ops.simulate import simulate as run

    settings = _settings()
    out = settings.home / "simulation"
    run(model, weeks, shift_week, rows, seed, out, echo=typer.echo)
    typer.echo(f"timeline: {out / 'timeline.json'}; plot: {out / 'timeline.png'}")


@app.command()
def trace(
    request_id: str = typer.Argument(..., help="The request_id of an answer (it is in the prediction log)."),
    model: str = MODEL_OPTION,
) -> None:
    """One answer traced: inputs, route then, Bento, MLflow run, data and feature version, commit; re-scored."""
    from loopline.ops.trace import TraceError
    from loopline.ops.trace import trace as run

    try:
        result = run(model, request_id, _settings())
    except TraceError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(result.text())
    if not result.reproduced:
        raise typer.Exit(1)


@app.command()
def ask(
    model: str = MODEL_OPTION,
    body: str = typer.Option(
        None, "--body", help='Request rows as JSON: [{...}] or {"instances": [...]}; default: the newest data rows.'
    ),
) -> None:
    """One real request to the champion's Bento over HTTP (started and stopped here); prints the answer."""
    from loopline.core.spec import load_spec
    from loopline.ops.ask import AskError
    from loopline.ops.ask import ask as run
    from loopline.serving.request_body import ROWS_KEY

    settings = _settings()
    spec = load_spec(model, settings.models_dir)
    rows = None
    if body is not None:
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError as err:
            raise typer.BadParameter(f"--body is not JSON: {err}") from None
        rows = parsed.get(ROWS_KEY) if isinstance(parsed, dict) else parsed
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise typer.BadParameter(f'--body must be a list of rows or {{"{ROWS_KEY}": [...]}}')
    try:
        asked = run(spec, settings, rows)
    except AskError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(asked.text())
    if asked.status != 200:
        raise typer.Exit(1)


@app.command()
def reproduce(
    version: str = typer.Argument(..., help="Registered model version, e.g. 3."),
    model: str = MODEL_OPTION,
) -> None:
    """Retrain a registered version from its lineage (data version, code commit, params); compare metrics."""
    from loopline.training.reproduce import ReproduceError
    from loopline.training.reproduce import reproduce as run

    try:
        result = run(model, version, _settings())
    except ReproduceError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.table())
    if not result.matches:
        raise typer.Exit(1)


@app.command("bento-image")
def bento_image(
    version: str = typer.Argument(..., help="Registered model version whose Bento to containerise, e.g. 3."),
    base_image: str = typer.Option("loopline:local", help="The project image (`make image`): same Python and pins."),
    engine: str = typer.Option("podman", help="Container engine CLI: podman or docker."),
    model: str = MODEL_OPTION,
) -> None:
    """An OCI image of a version's Bento (loopline-<model>:v<version>), recorded on the MLflow version."""
    from loopline.serving.bento_image import BentoImageError, build_bento_image

    try:
        typer.echo(build_bento_image(model, version, _settings(), base_image, engine))
    except BentoImageError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None


@app.command()
def step(
    name: str = typer.Argument(..., help="A heavy step: train_and_evaluate or score (loopline.ops.steps.STEPS)."),
    input_json: str = typer.Option(..., "--input", help="The step's input as JSON (what XCom carries)."),
    image_id: str = typer.Option("", help="The runtime image this runs in, recorded in the lineage."),
) -> None:
    """Run one heavy step as a DAG task does; its result is the last line (what a runtime image runs)."""
    from loopline.core.errors import LooplineError
    from loopline.core.runtime import ERROR_MARK, PERMANENT_EXIT, RESULT_MARK, run_step
    from loopline.ops.steps import step_named

    try:
        result = run_step(step_named(name), json.loads(input_json), _settings(), image_id or None)
    except LooplineError as err:  # permanent: the operator fails the task without retrying
        print(f"{ERROR_MARK}{type(err).__name__}: {err}", flush=True)
        raise typer.Exit(PERMANENT_EXIT) from None
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


@app.command("pull-data")
def pull_data(
    version: str = typer.Option("latest", help="'latest', 'vNNNN' or a data-registry commit."),
    out: Path | None = typer.Option(None, help="Folder to fetch the dataset into; default: data/<model>."),
    model: str = MODEL_OPTION,
) -> None:
    """Fetch an exact dataset version from the DVC remote (dvc.yaml stage `pull`)."""
    from loopline.core.spec import load_spec
    from loopline.ingestion.data_registry import DataRegistry, RegistryError

    settings = _settings()
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    try:
        resolved = registry.resolve(load_spec(model, settings.models_dir).dataset.name, version)
    except RegistryError as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(2) from None
    out = out or Path("data") / model
    registry.pull(resolved, out)
    (out.parent / f"{out.name}.version.json").write_text(json.dumps(resolved.to_dict(), indent=2) + "\n")
    typer.echo(f"{resolved.tag} (rev {resolved.rev[:10]}, {resolved.rows} rows) -> {out}")


@app.command("train-offline")
def train_offline(
    data: Path | None = typer.Option(None, help="Folder of parquet batches from pull-data; default: data/<model>."),
    out: Path | None = typer.Option(None, help="Where model.txt and metrics.json go; default: artifacts/<model>."),
    model: str = MODEL_OPTION,
) -> None:
    """Train and evaluate with the spec's params, outside Airflow and MLflow (dvc.yaml stage `train`)."""
    import pandas as pd

    from loopline.core.spec import load_spec
    from loopline.training import trainer as training

    settings = _settings()
    spec = load_spec(model, settings.models_dir)
    data, out = data or Path("data") / model, out or Path("artifacts") / model
    files = sorted(data.glob("*.parquet"))
    if not files:
        typer.secho(f"no parquet batches in {data}; run `loopline pull-data` first", fg="red", err=True)
        raise typer.Exit(2)
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    trained, metrics = training.fit_and_evaluate(frame, spec, {**spec.training.params, "seed": spec.training.seed})
    out.mkdir(parents=True, exist_ok=True)
    trained.booster.save_model(str(out / "model.txt"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "feature_importance.json").write_text(json.dumps(training.feature_importance(trained.booster), indent=2))
    typer.echo(json.dumps(metrics, indent=2))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
