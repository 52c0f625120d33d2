"""Benchmark: Loopline's drift check against Evidently's DataDriftPreset, on the same data in the same run.

Not a test: it measures and prints, it asserts nothing. Two parts:

1. **Speed.** A reference and a current set of ``--rows`` rows (default 1M) and
   ``--features`` columns (default 30): the generator's 15 credit features
   (``models/credit_risk/generator.py``) plus ``features - 15`` extra generated columns, two
   numeric for every categorical one: numeric ones cycle through normal, log-normal,
   uniform, Poisson counts and gamma draws (5% missing), categorical ones have 3 to 8 levels
   with Zipf-like shares (1% missing). The extra columns carry no signal about the label,
   like the many weak columns of a real wide table. Both tools get the same pandas frames
   plus the model's ``score`` column, and are timed from those frames to a verdict:
   Loopline ``fit_detector`` + ``check`` (which compares a seeded 20k-row sample of the
   reference, by design; see ``loopline.monitoring.detection.REFERENCE_MAX_ROWS``), Evidently
   ``Report([DataDriftPreset()]).run`` (which uses every reference row).
2. **Detection at default settings.** ``--pairs`` stable pairs (reference sample vs a sample
   of another draw from the same distribution) and ``--pairs`` shifted pairs (the same, with a
   subtle shift: +``--shift-sd`` standard deviations in debt_to_income, credit_utilization
   and interest_rate, about PSI 0.1 each), ``--pair-rows`` rows per side. Each tool's
   dataset-level verdict with its default settings: Loopline's ``DriftReport.confirmed``
   under the spec's drift policy, Evidently's dataset drift (share of drifted columns >=
   0.5). Printed: false-alarm rate, power, and the column-level view (shifted columns
   flagged, unshifted columns flagged). The pairs run in two forked worker processes (both tools
   alike; each timing is measured inside its worker).

The champion is stood in for by a small LightGBM trained on the reference (its gain
importances weight Loopline's verdict; its scores are the ``score`` column).

Usage: ``python -m bench.drift_bench [--rows 1000000] [--features 30] [--pairs 20] [--pair-rows 5000]``
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BASE_FEATURES = 15
SHIFTED = ("debt_to_income", "credit_utilization", "interest_rate")


def _extra_columns(n_rows: int, n_extra: int, seed: int) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Extra generated columns (see the module docstring); returns the frame and the categorical levels."""
    rng = np.random.default_rng([seed, 99])
    columns: dict[str, np.ndarray] = {}
    levels: dict[str, list[str]] = {}
    for i in range(n_extra):
        if i % 3 == 2:
            k = 3 + (i // 3) % 6
            names = [f"l{j}" for j in range(k)]
            share = 1 / np.arange(1, k + 1)
            values = rng.choice(np.array(names, dtype=object), n_rows, p=share / share.sum())
            values[rng.uniform(size=n_rows) < 0.01] = None
            name = f"x_cat_{i:02d}"
            levels[name] = names
        else:
            kind = i % 5
            if kind == 0:
                values = rng.normal(0, 1, n_rows)
            elif kind == 1:
                values = rng.lognormal(3, 0.8, n_rows)
            elif kind == 2:
                values = rng.uniform(0, 100, n_rows)
            elif kind == 3:
                values = rng.poisson(3, n_rows).astype("float64")
            else:
                values = rng.gamma(2, 2, n_rows)
            values[rng.uniform(size=n_rows) < 0.05] = np.nan
            name = f"x_num_{i:02d}"
        columns[name] = values
    return pd.DataFrame(columns), levels


def make_set(n_rows: int, n_features: int, week: int, seed: int) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    from tests.generators import credit_risk as _generator

    make_batch = _generator.make_batch

    base = make_batch(week, n_rows, seed=seed).drop(columns=["applicant_id", "applied_at"])
    extra, levels = _extra_columns(n_rows, n_features - BASE_FEATURES, seed)
    return pd.concat([base, extra], axis=1), levels


def shift(frame: pd.DataFrame, sds: dict[str, float], size: float) -> pd.DataFrame:
    """The subtle shift: +size standard deviations (of the reference) in each SHIFTED column."""
    out = frame.copy()
    for column in SHIFTED:
        out[column] = out[column] + size * sds[column]
    return out


def bench_spec(levels: dict[str, list[str]], extra_numeric: list[str]):
    """The credit_risk spec with the extra columns added as features."""
    from loopline.core.spec import ModelSpec, load_spec

    base = load_spec("credit_risk", MODELS_DIR).model_dump()
    base["features"]["numeric"].update({n: {"min": -1e9, "max": 1e9} for n in extra_numeric})
    base["features"]["categorical"].update(levels)
    return ModelSpec.model_validate(base).in_folder(MODELS_DIR / "credit_risk")  # keeps its features.py


@dataclass
class Champion:
    booster: object
    importances: dict[str, float]
    medians: dict[str, float]

    def scores(self, frame: pd.DataFrame, spec) -> np.ndarray:
        from loopline.monitoring import detection as drift

        return self.booster.predict(drift.encode(frame, spec, self.medians))


def train_champion(reference: pd.DataFrame, spec) -> Champion:
    import lightgbm as lgb

    from loopline.monitoring import detection as drift

    sample = reference.sample(min(len(reference), 50_000), random_state=1)
    medians = drift.reference_medians(sample, spec)
    names = spec.features.names
    data = lgb.Dataset(
        drift.encode(sample, spec, medians),
        label=sample["defaulted"].to_numpy(),
        feature_name=names,
        categorical_feature=[names.index(c) for c in spec.features.categorical],
    )
    params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 40, "seed": 1}
    booster = lgb.train({**params, "verbosity": -1, "num_threads": 2, "deterministic": True}, data, 100)
    gains = booster.feature_importance(importance_type="gain")
    importances = {n: float(g) / float(gains.sum()) for n, g in zip(names, gains, strict=True)}
    return Champion(booster, importances, medians)


def run_loopline(reference, current, spec, champion, ref_scores, cur_scores):
    from loopline.monitoring import detection as drift

    detector = drift.fit_detector(reference, spec, spec.monitoring.p_value)
    return drift.check(
        detector, reference, current, spec, champion.importances, ref_scores, cur_scores, spec.monitoring
    )


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, spec) -> dict:
    """Evidently 0.7, default DataDriftPreset; returns the dataset verdict and the per-column verdicts."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[*spec.features.numeric, "score"], categorical_columns=list(spec.features.categorical)
    )
    columns = [*spec.features.names, "score"]
    result = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    share, drifted = None, {}
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
    return {"dataset_drift": share >= threshold, "share": share, "drifted": drifted}


_PAIR_CONTEXT: dict = {}


def _pair(job: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> dict[str, dict]:
    """One stable and one shifted comparison with both tools (runs in a worker process)."""
    warnings.filterwarnings("ignore")
    ref, stable, shifted = job
    spec, unshifted = _PAIR_CONTEXT["spec"], _PAIR_CONTEXT["unshifted"]
    champion = Champion(None, _PAIR_CONTEXT["importances"], {})
    out: dict[str, dict] = {"L": {"seconds": 0.0}, "E": {"seconds": 0.0}}
    for kind, cur in (("stable", stable), ("shifted", shifted)):
        t = time.perf_counter()
        report = run_loopline(ref, cur, spec, champion, ref["score"], cur["score"])
        report.to_html()
        out["L"]["seconds"] += time.perf_counter() - t
        t = time.perf_counter()
        ev = run_evidently(ref, cur, spec)
        out["E"]["seconds"] += time.perf_counter() - t
        out["L"][kind], out["E"][kind] = report.confirmed, ev["dataset_drift"]
        flagged = {
            "L": set(report.drifted_features),
            "E": {c for c, drifted in ev["drifted"].items() if drifted and c != "score"},
        }
        for tool, columns in flagged.items():
            if kind == "shifted":
                out[tool]["hits"] = len(columns & set(SHIFTED)) / len(SHIFTED)
            else:
                out[tool]["false_cols"] = len(columns & set(unshifted)) / len(unshifted)
    return out


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "n/a (÷0)" if a else "1.00x (both 0)"
    return f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--pair-rows", type=int, default=5_000)
    parser.add_argument("--shift-sd", type=float, default=0.3)
    args = parser.parse_args(argv)
    if args.features < BASE_FEATURES:
        parser.error(f"--features must be at least {BASE_FEATURES} (the generator's own)")
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    print(f"drift bench: {args.rows:,} rows x {args.features} features; {os.cpu_count()} CPUs", flush=True)
    t = time.perf_counter()
    reference, levels = make_set(args.rows, args.features, week=0, seed=1)
    stable, _ = make_set(args.rows, args.features, week=1, seed=2)
    extra_numeric = [c for c in reference.columns if c.startswith("x_num_")]
    spec = bench_spec(levels, extra_numeric)
    sds = {c: float(reference[c].std()) for c in SHIFTED}
    shifted = shift(stable, sds, args.shift_sd)
    champion = train_champion(reference, spec)
    for frame in (reference, stable, shifted):
        frame["score"] = champion.scores(frame, spec)
    print(f"data + stand-in champion ready in {time.perf_counter() - t:.1f}s", flush=True)

    # -- part 1: speed on the full sets ------------------------------------------------------------
    # warm-ups: imports (seconds for both libraries) and first-call costs stay outside the timings
    run_loopline(reference.head(2_000), shifted.head(2_000), spec, champion, None, None)
    run_evidently(reference.head(2_000), shifted.head(2_000), spec)
    t = time.perf_counter()
    report = run_loopline(reference, shifted, spec, champion, reference["score"], shifted["score"])
    report.to_html()  # Evidently renders its report inside run(); time Loopline's page too
    loopline_s = time.perf_counter() - t
    print(f"loopline fit + check + HTML: {loopline_s:.1f}s -> {report.summary()}", flush=True)
    t = time.perf_counter()
    ev = run_evidently(reference, shifted, spec)
    evidently_s = time.perf_counter() - t
    print(
        f"evidently DataDriftPreset: {evidently_s:.1f}s -> dataset drift {ev['dataset_drift']}"
        f" (drifted column share {ev['share']:.2f})",
        flush=True,
    )

    # -- part 2: false alarms and power on small pairs (two worker processes, forked: warm imports) --
    n = min(args.pair_rows, args.rows)
    unshifted = [c for c in spec.features.names if c not in SHIFTED]
    _PAIR_CONTEXT.update(spec=spec, importances=champion.importances, unshifted=unshifted)
    jobs = []
    for k in range(args.pairs):
        rows = stable.sample(n, random_state=10_000 + k).index
        jobs.append((reference.sample(n, random_state=k), stable.loc[rows], shifted.loc[rows]))
    results = {tool: {"stable": [], "shifted": [], "hits": [], "false_cols": [], "seconds": 0.0} for tool in ("L", "E")}
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=get_context("fork")) as pool:
        for k, outcome in enumerate(pool.map(_pair, jobs), start=1):
            for tool, values in outcome.items():
                for key, value in values.items():
                    if key == "seconds":
                        results[tool]["seconds"] += value
                    else:
                        results[tool][key].append(value)
            print(f"  pair {k}/{args.pairs} done", flush=True)

    def rates(r: dict) -> tuple[float, float, float, float, float]:
        pairs = 2 * args.pairs
        return (
            float(np.mean(r["stable"])),
            float(np.mean(r["shifted"])),
            float(np.mean(r["hits"])),
            float(np.mean(r["false_cols"])),
            r["seconds"] / pairs,
        )

    lr, er = rates(results["L"]), rates(results["E"])
    total = time.perf_counter() - started
    bar = "=" * 100
    print(f"\n{bar}\nPart 1 - speed: {args.rows:,} rows x {args.features} features (+ score), same frames, this run")
    print(f"{'':34}{'seconds':>10}  verdict")
    print(f"{'Loopline fit + check + HTML':34}{loopline_s:>10.1f}  {report.verdict} (share {report.drift_share:.2f})")
    print(
        f"{'Evidently DataDriftPreset':34}{evidently_s:>10.1f}  "
        f"{'drift' if ev['dataset_drift'] else 'no_drift'} (column share {ev['share']:.2f})"
    )
    print(f"{'ratio Loopline / Evidently':34}{_ratio(loopline_s, evidently_s):>10}")
    print(
        f"\nPart 2 - detection at default settings: {args.pairs} stable + {args.pairs} shifted pairs of {n:,} rows;"
        f"\n  shift: +{args.shift_sd} SD in {', '.join(SHIFTED)} (importance share in the stand-in champion"
        f" {sum(champion.importances[c] for c in SHIFTED):.2f})"
    )
    head = ("false-alarm rate", "power", "shifted cols flagged", "other cols flagged", "s / comparison")
    print(f"{'':28}" + "".join(f"{h:>22}" for h in head))
    for name, r in (("Loopline", lr), ("Evidently", er)):
        print(f"{name:28}" + "".join(f"{v:>22.3f}" for v in r))
    print(f"{'ratio Loopline / Evidently':28}" + "".join(f"{_ratio(a, b):>22}" for a, b in zip(lr, er, strict=True)))
    print(
        "\nLoopline: feature_drift (the inputs' verdict) if any feature is FDR-significant with PSI >= "
        f"{spec.monitoring.min_psi} (p < {spec.monitoring.p_value}); whether it puts the model at risk is"
        " judged apart (monitoring.impact), not here."
        "\nEvidently: dataset drift if >= 50% of columns drift (Wasserstein/Jensen-Shannon > 0.1 on >1000 rows)."
        f"\ntotal bench time {total:.0f}s; load average {os.getloadavg()[0]:.1f}\n{bar}"
    )


if __name__ == "__main__":
    main()
