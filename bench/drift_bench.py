"""Benchmark: Loopline's drift check against Evidently and NannyML, side by side on the same windows.

Not a test: it measures and prints, it asserts nothing. For each demo model (``credit_risk``,
binary; ``delivery_time``, regression) one run:

1. **Champion.** Six generated weekly batches (``models/<name>/generator.py``), trained the
   platform's way (``loopline.training.trainer``: time split train | valid | holdout, the spec's
   LightGBM parameters, early stopping). As in ``drift_flow.reference_of``: the training rows
   (at most 20k) are the inputs' reference, the validation + holdout rows scored by the
   champion the answers' reference and the estimators' fitting data (Loopline's and NannyML's).
2. **Windows.** ``--stable`` windows of fresh batches from the same distribution, and
   ``--repeats`` windows per scenario: +size reference SDs (``--sizes``) in the most important
   numeric input (``one``), the two most important (``two``), the five most important
   (``many``), and in the least important one (``insensitive``: the model barely uses it; the
   largest two sizes). Shifted windows are relabelled with the generator's own label relation
   (a covariate shift, no concept drift), so the realised metric is what the model really scores.
   Apart from those, ``missing``: the most important input stops arriving for 30 % and 60 % of
   the rows (labelled from the values before they were blanked); scored in lines of their own,
   not in the per-column or estimation totals, since no tool compared estimates missing inputs.
   And ``prior shift``: the inputs as they were, the outcome moved evenly (binary: every row's
   log-odds of a positive +1.2, the demo's default rate about doubled; regression: every
   delivery 20 % longer), with the window's labels arriving; also scored in lines of their own.
   Every window is graded twice by Loopline: as the hourly check sees it before any label (the
   table's verdict columns), and with the window's own labels (``concept``: live quality against
   the holdout at the window's size, outcomes against predictions), the ``L concept`` column.
3. **The tools**, each timed per window from the same frames to its answer (fits are once per
   champion and not in the per-window time): Loopline ``detection.check`` + ``impact.judge`` +
   ``verdicts.grade`` (the spec's drift policy; alibi-detect's predictions come from one call of the
   drift worker in ``.venv-drift`` for all windows, its wall time shared out over them); Evidently
   ``DataDriftPreset`` with its defaults
   on the inputs against the same reference rows (per-column verdicts and its dataset drift:
   half the columns or more); NannyML CBPE (classifier: ROC AUC, precision, recall) or DLE
   (regressor: MAE), in a venv of its own (``NANNYML_PINS`` conflict with the pinned stack),
   run in a subprocess on the windows written to parquet.

Printed: per scenario the share of windows with each Loopline verdict, the share of the shifted
columns each tool flags, Evidently's dataset-drift rate, the false alarms on the stable
windows, the estimators' absolute error against the realised metric, wall time per window, and
the issue's targets met or missed. The regressor's estimates are compared like for like on the
MAE (NannyML's DLE has no sMAPE; Loopline's DLE estimates both, and its verdict judges the sMAPE,
whose error is printed too). Loopline's estimator is timed alone (``QualityEstimator.estimate``,
what NannyML's ``estimate`` does) and as ``impact.judge`` (the estimate plus the output mix).

Usage: ``python -m bench.drift_bench [--quick] [--models credit_risk,delivery_time] [--no-nannyml]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
NANNYML_VENV = ROOT / ".venv-nannyml"
NANNYML_PINS = ("nannyml==0.13.1", "pandas==2.2.3", "statsmodels==0.14.5")  # pandas 3 breaks NannyML 0.13.1
NANNYML_WORKER = Path(__file__).resolve().parent / "nannyml_worker.py"
TRAIN_WEEKS = 6  # 4 train + 1 valid + 1 holdout (the demo specs' split)
MANY = 5
MISSING_SHARES = (0.3, 0.6)  # the "missing" scenarios: share of rows without the most important input
PRIOR = {"binary": 1.2, "regression": 0.2}  # "prior shift": log-odds added (binary), share added to the target
NO_CONCEPT = SimpleNamespace(confirmed=False)  # no labels in the window: the concept channel stays quiet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke run while developing")
    parser.add_argument("--models", default="credit_risk,delivery_time")
    parser.add_argument("--week-rows", type=int, default=5_000, help="rows per generated training week")
    parser.add_argument("--window-rows", type=int, default=2_000)
    parser.add_argument("--stable", type=int, default=50, help="stable windows")
    parser.add_argument("--repeats", type=int, default=10, help="windows per shifted scenario")
    parser.add_argument("--sizes", default="0.1,0.25,0.5,1.0", help="shift sizes in reference SDs")
    parser.add_argument("--no-nannyml", action="store_true")
    parser.add_argument(
        "--evidently-timed", type=int, default=20,
        help="windows per model also run through Evidently's whole Report (timed; its verdicts checked against"
        " its stattests, which give every window's verdicts)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.week_rows, args.window_rows, args.stable, args.repeats, args.evidently_timed = 1_500, 1_000, 5, 2, 5
    args.models = [m for m in args.models.split(",") if m]
    args.sizes = [float(s) for s in args.sizes.split(",") if s]
    if not args.sizes or min(args.sizes) <= 0 or min(args.stable, args.repeats, args.evidently_timed) < 1:
        parser.error("--sizes must be positive numbers; --stable, --repeats and --evidently-timed at least 1")
    return args


# -- scenarios ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str  # "stable", "one +0.25sd", ...
    kind: str  # stable | one | two | many | insensitive | missing (size: the share of rows blanked) | prior
    columns: tuple[str, ...]
    size: float


def scenarios(ranked_numeric: list[str], sizes: list[float]) -> list[Scenario]:
    """Stable, then the one/two/many most important inputs at each size, the least important at the largest two."""
    out = [Scenario("stable", "stable", (), 0.0)]
    groups = {"one": ranked_numeric[:1], "two": ranked_numeric[:2], "many": ranked_numeric[:MANY]}
    for kind, columns in groups.items():
        out += [Scenario(f"{kind} +{s:g}sd", kind, tuple(columns), s) for s in sizes]
    out += [Scenario(f"insensitive +{s:g}sd", "insensitive", (ranked_numeric[-1],), s) for s in sorted(sizes)[-2:]]
    out += [Scenario(f"missing {s:.0%}", "missing", tuple(ranked_numeric[:1]), s) for s in MISSING_SHARES]
    out.append(Scenario("prior shift", "prior", (), 1.0))
    return out


def blank(frame: pd.DataFrame, scenario: Scenario, seed: int) -> pd.DataFrame:
    """The scenario's columns missing (NaN) in a random ``size`` share of the rows."""
    gone = np.random.default_rng([seed, 78]).uniform(size=len(frame)) < scenario.size
    return frame.assign(**{c: frame[c].where(~gone) for c in scenario.columns})


def apply_shift(frame: pd.DataFrame, scenario: Scenario, sds: dict[str, float]) -> pd.DataFrame:
    out = frame.copy()
    for column in scenario.columns:
        out[column] = out[column] + scenario.size * sds[column]
    return out


# -- the champion, the way the platform trains it ------------------------------------------------------


@dataclass
class Bench:
    name: str
    spec: object
    generator: object
    booster: object
    importances: dict[str, float]  # per raw input (detection.feature_weights)
    train: pd.DataFrame  # the inputs' reference
    unseen: pd.DataFrame  # valid + holdout with score, decision, outcome
    valid: pd.DataFrame
    holdout: pd.DataFrame
    ranked_numeric: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.spec.task

    def answered(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The champion's score and decision per row, plus the outcome: what the prediction log holds.

        The booster's own ``predict`` on the prepared feature matrix (one thread), not ``score_frame``:
        the bench needs no reason codes, and their ``pred_contrib`` call was most of the bench's scoring
        time. ``build`` checks once per champion that the answers equal ``score_frame``'s.
        """
        from loopline.core.features import feature_set
        from loopline.core.tasks import task_of
        from loopline.training import trainer

        features = feature_set(self.spec)
        built = features.build_arrays(features.raw_arrays(rows))
        matrix = np.column_stack([built[c] for c in features.columns])
        raw = self.booster.predict(matrix, num_iteration=self.booster.best_iteration or None, num_threads=1)
        out = task_of(self.spec).outputs(raw, self.spec)
        decision = out.decision if out.decision is not None else np.full(len(rows), None, dtype=object)
        return rows.reset_index(drop=True).assign(
            score=out.score, decision=decision, outcome=trainer.target(rows, self.spec)
        )

    def relabel(self, rows: pd.DataFrame, seed: int, prior: float = 0.0) -> pd.DataFrame:
        """Labels drawn from the generator's own relation for (shifted) inputs: covariate shift only; ``prior``
        moves the outcome evenly (log-odds added, or a share of the target added): a prior shift."""
        rng = np.random.default_rng([seed, 77])
        target = self.spec.dataset.target
        if self.task == "binary":
            p = 1 / (1 + np.exp(-(self.generator.true_default_logit(rows) + prior)))
            labels = (rng.uniform(size=len(rows)) < p).astype("int64")
        else:
            minutes = self.generator.true_minutes(rows) * (1 + prior)
            labels = np.clip(minutes + rng.normal(0, 4, len(rows)), 5, 300).round(1)
        return rows.assign(**{target: labels})


def build(name: str, week_rows: int) -> Bench:
    from loopline.core.spec import load_spec
    from loopline.monitoring import detection
    from loopline.ops.demo_data import load_generator
    from loopline.serving.scoring import score_frame
    from loopline.training import trainer
    from loopline.training.hyperparams import merge_params

    spec = load_spec(name, MODELS_DIR)
    generator = load_generator(MODELS_DIR / name)
    frame = pd.concat([generator.make_batch(w, week_rows, seed=1) for w in range(TRAIN_WEEKS)], ignore_index=True)
    split = trainer.time_split(trainer.labelled(frame, spec), spec)
    params = {**merge_params(spec.training.params, {}), "seed": spec.training.seed}
    booster = trainer.train(split, spec, params).booster
    train = split.train.sample(min(len(split.train), 20_000), random_state=0).reset_index(drop=True)
    importances = detection.feature_weights(trainer.feature_importance(booster), spec)
    bench = Bench(name, spec, generator, booster, importances, train, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    bench.valid, bench.holdout = bench.answered(split.valid), bench.answered(split.holdout)
    served = score_frame(booster, split.valid[spec.features.names], spec, num_threads=1)
    if not (np.allclose(served["score"], bench.valid["score"]) and served["decision"].equals(bench.valid["decision"])):
        raise RuntimeError("the bench's scoring path disagrees with score_frame")
    bench.unseen = pd.concat([bench.valid, bench.holdout], ignore_index=True)
    numeric = list(spec.features.numeric)
    bench.ranked_numeric = sorted(numeric, key=lambda c: -importances[c])
    return bench


def windows(bench: Bench, plan: list[Scenario], args: argparse.Namespace) -> list[tuple[Scenario, pd.DataFrame]]:
    """Every window of the run, answered by the champion (stable: fresh batches; shifted: shifted and relabelled)."""
    sds = {c: float(bench.train[c].std()) for c in bench.spec.features.numeric}
    out = []
    for i, scenario in enumerate(plan):
        count = args.stable if scenario.kind == "stable" else args.repeats
        for k in range(count):
            seed = 1_000 * (i + 1) + k
            rows = bench.generator.make_batch(TRAIN_WEEKS + k, args.window_rows, seed=seed)
            if scenario.kind == "missing":
                rows = blank(bench.relabel(rows, seed), scenario, seed)
            elif scenario.kind == "prior":
                rows = bench.relabel(rows, seed, prior=PRIOR[bench.task])
            elif scenario.kind != "stable":
                rows = bench.relabel(apply_shift(rows, scenario, sds), seed)
            out.append((scenario, bench.answered(rows)))
    return out


# -- the tools -----------------------------------------------------------------------------------------


def realised(bench: Bench, window: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    from loopline.monitoring.impact import smape_terms

    y, s = window["outcome"].to_numpy(float), window["score"].to_numpy(float)
    if bench.task == "binary":
        flagged = s >= bench.spec.training.decision_threshold
        tp = float((flagged & (y == 1)).sum())
        return {
            "auc": float(roc_auc_score(y, s)),
            "precision": tp / max(float(flagged.sum()), 1.0),
            "recall": tp / max(float((y == 1).sum()), 1.0),
        }
    return {"smape": float(smape_terms(y, s).mean()), "mae": float(mean_absolute_error(y, s))}


def run_loopline(bench: Bench, detector: Path, estimator, window: pd.DataFrame, detected) -> dict:
    from loopline.monitoring import detection, impact, verdicts

    policy = bench.spec.monitoring
    t = time.perf_counter()
    estimator.estimate(window)
    estimate_seconds = time.perf_counter() - t  # the part NannyML does (estimation), timed apart
    t = time.perf_counter()
    effect = impact.judge(estimator, bench.unseen, window, bench.spec, policy, answer=bench.answered)
    judge_seconds = time.perf_counter() - t  # the estimate again, plus the output mix
    report = detection.check(
        detector, bench.train, window, bench.spec, bench.importances, bench.unseen["score"].to_numpy(),
        window["score"].to_numpy(float), policy, detection=detected,
    )  # fmt: skip
    return {
        "estimate_seconds": estimate_seconds,
        "judge_seconds": judge_seconds,
        "verdict": verdicts.grade(report, effect, NO_CONCEPT),
        "graded": (report, effect),  # to grade again with the window's labels (labelled_verdict)
        "flagged": set(report.drifted_features),
        "estimate": effect.estimated,
        "missing_quality": effect.missing.quality if effect.missing is not None else None,
        **effect.extra,
    }


def labelled_verdict(bench: Bench, graded: tuple, window: pd.DataFrame) -> str:
    """The check's verdict once the window's labels have arrived: the concept channel as drift_flow runs it."""
    from loopline.monitoring import concept, verdicts

    spec, policy = bench.spec, bench.spec.monitoring
    labelled = window.assign(model_version="1")
    holdout = concept.live_quality(bench.holdout.assign(model_version="1"), spec)["1"].value
    judged = concept.concept_verdict(
        concept.live_quality(labelled, spec).get("1"), holdout, policy, spec,
        outcomes=concept.outcome_shifts(labelled, bench.unseen, spec, policy),
        holdout_se=concept.holdout_se(bench.holdout, spec),
    )  # fmt: skip
    return verdicts.grade(*graded, judged)


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, spec) -> dict:
    """Evidently 0.7, default DataDriftPreset on the inputs; the dataset verdict and the per-column verdicts.

    The whole Report: what a user of the preset runs (and pays for: most of it is building the
    report's plotly widgets, which ``Report.run`` always does). Timed on ``--evidently-timed``
    windows per model; every window's verdicts come from ``evidently_columns``, the same tests.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=list(spec.features.numeric), categorical_columns=list(spec.features.categorical)
    )
    columns = spec.features.names
    result = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    share, threshold, drifted = None, 0.5, {}
    for metric in result.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            threshold = float(config.get("drift_share", 0.5))
        elif config["type"].endswith(":ValueDrift"):
            value, limit = float(metric["value"]), float(config["threshold"])
            # p-value tests drift below their threshold, distances at or above it (evidently.legacy stattests)
            drifted[config["column"]] = value < limit if "p_value" in config["method"] else value >= limit
    if share is None:
        raise RuntimeError("Evidently's result has no DriftedColumnsCount")
    return {"dataset_drift": share >= threshold, "flagged": {c for c, d in drifted.items() if d}}


def evidently_columns(reference: pd.DataFrame, current: pd.DataFrame, spec, drift_share: float = 0.5) -> dict:
    """The preset's verdicts without its report: per column, the stattest and threshold its ``ValueDrift`` picks.

    ``ValueDrift`` calls ``get_one_column_drift``, which drops missing and infinite values, picks the
    default test (``get_stattest`` with no method: for more than 1,000 reference rows the normalised
    Wasserstein distance for numeric columns and Jensen-Shannon for categorical ones, each at its
    default threshold 0.1) and applies it; the dataset drifts when ``drift_share`` of the columns do
    (the preset's default). ``compare`` checks these against the whole Report on the timed windows.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    flagged = set()
    kinds = [(c, ColumnType.Numerical) for c in spec.features.numeric]
    kinds += [(c, ColumnType.Categorical) for c in spec.features.categorical]
    for column, kind in kinds:
        ref = reference[column].replace([-np.inf, np.inf], np.nan).dropna()
        cur = current[column].replace([-np.inf, np.inf], np.nan).dropna()
        if get_stattest(ref, cur, kind, None)(ref, cur, kind, None).drifted:
            flagged.add(column)
    return {"dataset_drift": len(flagged) / len(kinds) >= drift_share, "flagged": flagged}


def nannyml_python(venv: Path = NANNYML_VENV) -> tuple[Path | None, str]:
    """The NannyML venv's Python, made on first use with ``NANNYML_PINS``; (None, why) when it cannot be had."""
    python = venv / "bin" / "python"
    want = NANNYML_PINS[0].split("==")[1]
    probe = [str(python), "-c", "import nannyml; print(nannyml.__version__)"]
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, env=env)
        if done.returncode == 0 and done.stdout.strip() == want:
            return python, f"nannyml {want} in {venv.name}"
    uv = Path(sys.executable).parent / "uv"
    steps = [
        [str(uv), "venv", "-q", "--allow-existing", str(venv), "--python", sys.executable],
        [str(uv), "pip", "install", "-q", "--python", str(python), *NANNYML_PINS],
        probe,
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, f"NannyML unavailable ({' '.join(step[:3])}: {err})"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"NannyML unavailable ({' '.join(step[:3])} failed: {tail[0]})"
    return python, f"nannyml {want} in {venv.name} (installed now)"


def run_nannyml(python: Path, bench: Bench, answered: list[pd.DataFrame], folder: Path) -> dict:
    """NannyML's estimates and per-window seconds, computed in its own venv on the same rows (written to parquet)."""
    features = bench.spec.features.names
    threshold = bench.spec.training.decision_threshold if bench.task == "binary" else None

    def table(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[features].copy()
        out["score"] = frame["score"].to_numpy(float)
        if threshold is not None:
            out["pred"] = (out["score"] >= threshold).astype("int64")
        out["outcome"] = frame["outcome"].to_numpy(float)
        return out

    table(bench.unseen).to_parquet(folder / "reference.parquet")
    parts = [table(w).assign(window=str(i)) for i, w in enumerate(answered)]
    pd.concat(parts, ignore_index=True).to_parquet(folder / "windows.parquet")
    job = {
        "task": bench.task, "features": features, "window_rows": len(answered[0]),
        "reference": str(folder / "reference.parquet"), "windows": str(folder / "windows.parquet"),
        "out": str(folder / "nannyml.json"),
    }  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    done = subprocess.run(
        [str(python), str(NANNYML_WORKER), str(folder / "job.json")], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"NannyML worker failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((folder / "nannyml.json").read_text())


# -- the table ------------------------------------------------------------------------------------------


def format_table(header: list[str], rows: list[list[object]]) -> list[str]:
    """Fixed-width text table: the first column left-aligned, floats with 3 decimals, None as 'n/a'."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]


def ratio(slow: float | None, fast: float | None) -> str:
    if slow is None or fast is None or not fast:
        return "n/a"
    return f"{slow / fast:.1f}x"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def summarise(plan: list[Scenario], records: list[dict]) -> list[list[object]]:
    """One row per scenario from the per-window records (see ``compare``)."""
    rows = []
    for scenario in plan:
        mine = [r for r in records if r["scenario"] == scenario.name]
        shifted = set(scenario.columns)

        def hit(tool: str, mine=mine, shifted=shifted) -> float | None:
            if not shifted:  # stable: the share of all columns flagged (per-column false alarms)
                return _mean([len(r[tool]) / r["n_columns"] for r in mine])
            return _mean([len(r[tool] & shifted) / len(shifted) for r in mine])

        rows.append([
            scenario.name, len(mine),
            _mean([r["verdict"] == "feature_drift" for r in mine]),
            _mean([r["verdict"] == "performance_risk" for r in mine]),
            hit("L_flagged"), hit("E_flagged"),
            _mean([r["E_dataset"] for r in mine]),
            _mean([r["realised"] for r in mine]),
            _mean([abs(r["L_est"] - r["realised"]) if r["L_est"] is not None else None for r in mine]),
            _mean([abs(r["N_est"] - r["realised"]) if r["N_est"] is not None else None for r in mine]),
            _mean([r["verdict"] == "output_shift" for r in mine]),
            _mean([r["labelled_verdict"] == "concept_drift" for r in mine if "labelled_verdict" in r]),
        ])  # fmt: skip
    return rows


HEADER = [
    "scenario", "n", "L feature_drift", "L perf_risk", "L cols hit", "E cols hit", "E dataset drift",
    "realised", "L est |err|", "N est |err|", "L output_shift", "L concept",
]  # fmt: skip


def compare(bench: Bench, args: argparse.Namespace, python: Path | None, folder: Path) -> dict:
    from loopline.monitoring import detection, impact

    policy = bench.spec.monitoring
    plan = scenarios(bench.ranked_numeric, args.sizes)
    todo = windows(bench, plan, args)
    detector = folder / "detector"
    detection.run_detector(detector, bench.train, bench.spec, policy.p_value)  # the fit, once per champion
    # alibi-detect runs in .venv-drift (it pins numpy<2): one worker call predicts every window, and its
    # time, start-up and imports included, is shared out over the windows' Loopline time ("L").
    t = time.perf_counter()
    answers = detection.run_detector(detector, bench.train, bench.spec, policy.p_value, [w for _, w in todo]).windows
    worker_share = (time.perf_counter() - t) / len(todo)
    estimator = impact.fit_estimator(bench.spec, bench.valid, bench.holdout)
    run_loopline(bench, detector, estimator, todo[0][1], answers[0])  # warm-ups: first-call costs stay outside
    run_evidently(bench.train, todo[0][1], bench.spec)
    live = "auc" if bench.task == "binary" else "smape"  # what Loopline's verdict judges
    compared = "auc" if bench.task == "binary" else "mae"  # what both tools estimate (NannyML's DLE has no sMAPE)
    nml_metric = "roc_auc" if bench.task == "binary" else "mae"
    records = []
    # Timed: the windows every tool answers alike (the missing-input ones add Loopline's re-scoring what-if).
    comparable = [k for k, (scenario, _) in enumerate(todo) if scenario.kind != "missing"]
    picks = np.linspace(0, len(comparable) - 1, min(args.evidently_timed, len(comparable))).round().astype(int)
    timed = {comparable[i] for i in picks.tolist()}
    agree = 0
    for k, (scenario, window) in enumerate(todo):
        t = time.perf_counter()
        loop = run_loopline(bench, detector, estimator, window, answers[k])
        took = {
            "L": time.perf_counter() - t + worker_share,
            "L_est": loop["estimate_seconds"],
            "L_judge": loop["judge_seconds"],
        }
        t = time.perf_counter()
        ev = evidently_columns(bench.train, window, bench.spec)
        took["E_tests"] = time.perf_counter() - t
        if k in timed:
            t = time.perf_counter()
            report = run_evidently(bench.train, window, bench.spec)
            took["E"] = time.perf_counter() - t
            agree += report == ev
        truth = realised(bench, window)
        records.append({
            "scenario": scenario.name, "verdict": loop["verdict"], "L_flagged": loop["flagged"],
            "E_flagged": ev["flagged"], "E_dataset": ev["dataset_drift"], "n_columns": len(bench.spec.features.names),
            "realised": truth[compared], "L_est": loop["estimate"] if compared == live else loop.get(compared),
            "N_est": None, "live_realised": truth[live], "L_live_est": loop["estimate"], "truth": truth,
            "observed_mean": float(window["outcome"].mean()),
            "L_extra": loop, "seconds": took, "labelled_verdict": labelled_verdict(bench, loop["graded"], window),
        })  # fmt: skip
        if (k + 1) % 25 == 0:
            print(f"  {bench.name}: {k + 1}/{len(todo)} windows", flush=True)
    if agree < len(timed):
        raise RuntimeError(
            f"Evidently's Report and its stattests disagree on {len(timed) - agree} of {len(timed)} windows"
        )
    nannyml_note = "not run (--no-nannyml)" if args.no_nannyml else "unavailable"
    if python is not None:
        try:
            result = run_nannyml(python, bench, [w for _, w in todo], folder)
            for i, record in enumerate(records):
                got = result["windows"][str(i)]
                record["N_est"], record["N_extra"], record["seconds"]["N"] = got[nml_metric], got, got["seconds"]
            nannyml_note = f"nannyml {result['version']}, fit {result['fit_seconds']:.2f}s"
        except (RuntimeError, KeyError, OSError) as err:
            nannyml_note = f"NannyML failed, continuing without it: {err}"
    per_window = {
        tool: _mean([records[k]["seconds"][tool] for k in comparable if tool in records[k]["seconds"]])
        for tool in ("L", "L_est", "L_judge", "E", "E_tests", "N")
    }
    reference_realised = realised(bench, bench.unseen)[live]
    return {
        "plan": plan, "records": records, "per_window": per_window, "nannyml": nannyml_note, "live": live,
        "compared": compared,
        "evidently_timed": len(timed), "reference_realised": reference_realised,
        "reference_mean": float(bench.unseen["outcome"].mean()),
    }  # fmt: skip


def verdict_lines(bench: Bench, outcome: dict) -> list[str]:
    """The issue's targets, met or missed, from one model's records."""
    records, per_window = outcome["records"], outcome["per_window"]
    plan = {s.name: s for s in outcome["plan"]}
    gone = [r for r in records if plan[r["scenario"]].kind == "missing"]  # scored apart (missing_lines)
    prior = [r for r in records if plan[r["scenario"]].kind == "prior"]  # scored apart (prior_lines)
    records = [r for r in records if plan[r["scenario"]].kind not in ("missing", "prior")]
    stable = [r for r in records if r["scenario"] == "stable"]
    shifted = [r for r in records if r["scenario"] != "stable"]
    n_cols = stable[0]["n_columns"]

    def hits(tool: str) -> float:
        return float(
            np.mean(
                [len(r[tool] & set(plan[r["scenario"]].columns)) / len(plan[r["scenario"]].columns) for r in shifted]
            )
        )

    def false_cols(tool: str) -> float:
        return float(np.mean([len(r[tool]) / n_cols for r in stable]))

    l_alarm = float(np.mean([r["verdict"] not in ("stable", "insufficient") for r in stable]))
    e_alarm = float(np.mean([r["E_dataset"] for r in stable]))
    lh, eh, lf, ef = hits("L_flagged"), hits("E_flagged"), false_cols("L_flagged"), false_cols("E_flagged")
    met = "met" if lh >= eh and lf <= ef else "MISSED"
    lines = [
        f"false alarms on {len(stable)} stable windows: Loopline any verdict but stable {l_alarm:.3f},"
        f" Evidently dataset drift {e_alarm:.3f}; per-column false flags Loopline {lf:.3f}, Evidently {ef:.3f}",
        f"per-column detection over all shifted windows: Loopline {lh:.3f}, Evidently {eh:.3f}"
        f" (target: at least Evidently's at no more false flags): {met}",
    ]
    l_err = _mean([abs(r["L_est"] - r["realised"]) if r["L_est"] is not None else None for r in records])
    n_err = _mean([abs(r["N_est"] - r["realised"]) if r["N_est"] is not None else None for r in records])
    if bench.task == "binary":
        if n_err is None:
            lines.append(f"estimation |error| of ROC AUC: Loopline {l_err:.4f}; NannyML {outcome['nannyml']}")
        else:
            lines.append(
                f"estimation |error| of ROC AUC, all windows: Loopline CBPE-style {l_err:.4f}, NannyML CBPE {n_err:.4f}"
                f" (target: no worse): {'met' if l_err <= n_err else 'MISSED'}"
            )
        for extra in ("precision", "recall"):
            key = f"{extra}_at_threshold"
            le = _mean([abs(r["L_extra"].get(key, np.nan) - r["truth"][extra]) for r in records])
            ne = _mean([abs(r["N_extra"][extra] - r["truth"][extra]) for r in records if r["N_est"] is not None])
            lines.append(f"  {extra} at the decision threshold |error|: Loopline {_fmt(le)}, NannyML {_fmt(ne)}")
    else:
        if n_err is None:
            lines.append(f"estimation |error| of MAE: Loopline DLE-style {l_err:.4f}; NannyML {outcome['nannyml']}")
        else:
            lines.append(
                f"estimation |error| of MAE (minutes), all windows: Loopline DLE-style {l_err:.4f}, NannyML DLE"
                f" {n_err:.4f} (target: no worse): {'met' if l_err <= n_err else 'MISSED'}"
            )
        live = [r for r in records if r["L_live_est"] is not None]
        s_err = _mean([abs(r["L_live_est"] - r["live_realised"]) for r in live])
        s_rel = _mean([abs(r["L_live_est"] - r["live_realised"]) / r["live_realised"] for r in live])
        lines.append(
            f"  sMAPE (what Loopline's verdict judges; NannyML has none) |error|: Loopline {_fmt(s_err)}"
            f" ({s_rel:.1%} of realised)"
        )
    full, est, ev, nml = per_window["L"], per_window["L_est"], per_window["E"], per_window["N"]
    judged = per_window.get("L_judge")
    tests = per_window.get("E_tests")
    timed = outcome.get("evidently_timed")
    lines.append(
        f"seconds per window: Loopline whole check {full:.4f} (its estimator alone {est:.4f}, with the output mix"
        f" {_fmt(judged)}: {ratio(nml, judged)} faster than NannyML's estimate), Evidently"
        f" DataDriftPreset report {ev:.4f}{f' (timed on {timed} windows)' if timed else ''}, NannyML estimator"
        f" {_fmt(nml)}; Evidently / Loopline check {ratio(ev, full)}, NannyML / Loopline estimator {ratio(nml, est)},"
        f" NannyML / Loopline whole check {ratio(nml, full)} (target >= 5x):"
        f" {'met' if ev >= 5 * full and (nml is None or nml >= 5 * est) else 'MISSED'}"
    )
    if tests is not None:
        lines.append(
            f"  Evidently's per-column stattests alone (no report) {tests:.4f} s per window:"
            f" {ratio(tests, full)} Loopline's whole check"
        )
    return lines + prior_lines(bench, outcome, stable, prior) + missing_lines(bench, outcome, gone)


def prior_lines(bench: Bench, outcome: dict, stable: list[dict], records: list[dict]) -> list[str]:
    """The outcome moved with the inputs unchanged: what each grading says, with and without the window's labels."""
    if not records:
        return []
    graded = [r for r in stable if "labelled_verdict" in r]
    alarms = sum(r["labelled_verdict"] not in ("stable", "insufficient") for r in graded)
    concept = sum(r["labelled_verdict"] == "concept_drift" for r in records)
    before = {v: sum(r["verdict"] == v for r in records) for v in sorted({r["verdict"] for r in records})}
    what = "positive rate" if bench.task == "binary" else "mean outcome"
    observed = _mean([r["observed_mean"] for r in records if "observed_mean" in r])
    reference = outcome.get("reference_mean")
    moved = f" ({what} {reference:.3g} on the unseen rows -> {observed:.3g})" if observed and reference else ""
    return [
        f"prior shift{moved}, inputs unchanged: with the window's labels concept_drift {concept}/{len(records)};"
        f" before any label {', '.join(f'{v} {k}' for v, k in before.items())}; stable windows with their labels:"
        f" {alarms}/{len(graded)} graded anything but stable"
    ]


def missing_lines(bench: Bench, outcome: dict, records: list[dict]) -> list[str]:
    """The top input gone missing: the verdicts, and each estimate of the window's realised metric."""
    if not records:
        return []
    live, policy = outcome["live"], bench.spec.monitoring
    before = outcome["reference_realised"]
    scenarios = [s for s in outcome["plan"] if s.kind == "missing"]
    lines = [f"inputs gone missing ({', '.join(scenarios[0].columns)} blanked; labels from the values before):"]
    for scenario in scenarios:
        mine = [r for r in records if r["scenario"] == scenario.name]
        real = _mean([r["live_realised"] for r in mine])
        risk = sum(r["verdict"] == "performance_risk" for r in mine)
        what_if = _mean([abs(r["L_extra"]["missing_quality"] - r["live_realised"]) for r in mine
                         if r["L_extra"]["missing_quality"] is not None])  # fmt: skip
        estimator = _mean([abs(r["L_live_est"] - r["live_realised"]) for r in mine])
        nml = _mean([abs(r["N_est"] - r["realised"]) for r in mine if r["N_est"] is not None])
        nml_text = f", NannyML ({outcome['compared'].upper()}) {_fmt(nml)}" if nml is not None else ""
        lines.append(
            f"  {scenario.name}: performance_risk {risk}/{len(mine)}; realised {live.upper()} {before:.3f} on the"
            f" unseen rows -> {_fmt(real)} (tolerance {policy.max_estimated_drop}); |error| of the estimate:"
            f" Loopline's what-if {_fmt(what_if)}, Loopline's label-free estimator {_fmt(estimator)}{nml_text}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    print(f"drift bench: models {', '.join(args.models)}; {os.cpu_count()} CPUs; {'quick' if args.quick else 'full'}")
    python, note = (None, "NannyML not run (--no-nannyml)") if args.no_nannyml else nannyml_python()
    print(note, flush=True)
    bar = "=" * 110
    out = []
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        for name in args.models:
            t = time.perf_counter()
            bench = build(name, args.week_rows)
            ranked = ", ".join(f"{c} {bench.importances[c]:.3f}" for c in bench.ranked_numeric)
            print(
                f"{name}: champion trained in {time.perf_counter() - t:.1f}s; inputs by importance: {ranked}",
                flush=True,
            )
            folder = Path(tmp) / name
            folder.mkdir()
            outcome = compare(bench, args, python, folder)
            out.append(f"\n{bar}\n{name} ({bench.task}): {args.window_rows:,} rows a window; estimated metric"
                       f" compared: {outcome['compared']} (Loopline's verdict judges {outcome['live']})"
                       f" ({outcome['nannyml']})")  # fmt: skip
            out += format_table(HEADER, summarise(outcome["plan"], outcome["records"]))
            out += verdict_lines(bench, outcome)
    print("\n".join(out))
    print(
        f"\n{bar}\nL = Loopline (verdict shares; 'cols hit' = share of the shifted inputs flagged, stable row: share of"
        " all inputs flagged), E = Evidently DataDriftPreset defaults, N = NannyML. |err| = mean absolute error of the"
        f" estimate against the realised metric.\ntotal {time.perf_counter() - started:.0f}s;"
        f" load average {os.getloadavg()[0]:.1f}\n{bar}"
    )


if __name__ == "__main__":
    main()
