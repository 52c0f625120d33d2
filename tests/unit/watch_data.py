"""Tables the watch tests generate themselves (not the demo generators): a binary, a multiclass and a regression
model of loan-like rows with a known true relation, so a base rate can be moved with the inputs unchanged.

``spec_folder`` writes a model folder for them (the spec the platform would load), ``table`` draws weekly rows,
``champion`` trains it the platform's way and answers its unseen splits as the drift check does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core.spec import ModelSpec, load_spec

NUMERIC = {"x_income": (0, 400), "x_debt": (0, 5), "x_age": (18, 100), "x_score": (300, 900), "x_noise": (-10, 10)}
LEVELS = ["a", "b", "c", "d"]
CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]
T0 = pd.Timestamp("2026-01-05")  # a Monday: one generated week is one ISO week


def _spec_yaml(name: str, task: str) -> str:
    target = {"binary": "y", "multiclass": "grade", "regression": "amount"}[task]
    numeric = "\n".join(f"    {c}: {{min: {lo}, max: {hi}}}" for c, (lo, hi) in NUMERIC.items())
    classes = f"  classes: [{', '.join(CLASSES)}]\n" if task == "multiclass" else ""
    objective = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}[task]
    gate = {"binary": "min_auc: 0.6", "multiclass": "min_accuracy: 0.2", "regression": "min_r2: 0.1"}[task]
    threshold = "  decision_threshold: 0.3\n  decisions: {below: approve, at_or_above: decline}\n"
    return f"""name: {name}
task: {task}
dataset:
  name: {name}
  entity_id: row_id
  timestamp: at
  target: {target}
  expectation_suite: {name}_batch
{classes}features:
  version: "1"
  numeric:
{numeric}
  categorical:
    x_kind: [{", ".join(LEVELS)}]
training:
  valid_weeks: 1
  holdout_weeks: 1
  min_train_rows: 100
{threshold if task == "binary" else ""}  seed: 3
  early_stopping_rounds: 30
  params:
    objective: {objective}
    learning_rate: 0.05
    num_leaves: 31
    min_child_samples: 40
    num_boost_round: 300
quality_gate:
  {gate}
"""


def spec_folder(root: Path, task: str = "binary", name: str | None = None) -> ModelSpec:
    name = name or f"watch_{task}"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(_spec_yaml(name, task))
    return load_spec(name, root)


def inputs(n: int, seed: int, week: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng([seed, week, 5])
    return pd.DataFrame(
        {
            "row_id": [f"r{seed}-{week}-{i}" for i in range(n)],
            "at": (T0 + pd.Timedelta(weeks=week) + pd.to_timedelta(rng.uniform(0, 6.9, n), unit="D")).strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "x_income": np.clip(rng.lognormal(4, 0.5, n), 0, 400),
            "x_debt": np.clip(rng.gamma(2, 0.3, n), 0, 5),
            "x_age": np.clip(rng.normal(42, 12, n), 18, 100),
            "x_score": np.clip(rng.normal(650, 70, n), 300, 900),
            "x_noise": rng.normal(0, 2, n),
            "x_kind": rng.choice(LEVELS, n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


def risk(rows: pd.DataFrame) -> np.ndarray:
    """The true linear predictor: what makes a row positive, a higher class or a bigger amount."""
    kind = rows["x_kind"].map({"a": 0.0, "b": 0.3, "c": 0.6, "d": 1.0}).to_numpy(float)
    return (
        -0.012 * (rows["x_income"].to_numpy(float) - 60)
        + 1.1 * (rows["x_debt"].to_numpy(float) - 0.6)
        - 0.01 * (rows["x_score"].to_numpy(float) - 650)
        - 0.015 * (rows["x_age"].to_numpy(float) - 42)
        + kind
    )


BASE_LOGIT = -2.0  # about a 0.15 positive rate


def logit_shift_for(rate: float, rows: pd.DataFrame, base: float = BASE_LOGIT) -> float:
    """The shift of the intercept that moves the mean true probability of ``rows`` to ``rate``."""
    lo, hi = -10.0, 10.0
    z = risk(rows) + base
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.mean(1 / (1 + np.exp(-(z + mid))))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def label(rows: pd.DataFrame, task: str, seed: int, shift: float = 0.0, strength: float = 1.0) -> pd.DataFrame:
    """The rows with their outcome drawn from the true relation; ``shift`` moves the intercept (a prior shift),
    ``strength`` scales how much the inputs say (how good a model can be)."""
    rng = np.random.default_rng([seed, 17])
    z = strength * risk(rows) + shift
    if task == "binary":
        p = 1 / (1 + np.exp(-(z + BASE_LOGIT)))
        return rows.assign(y=(rng.uniform(size=len(rows)) < p).astype("int64"))
    if task == "multiclass":
        noisy = z + rng.logistic(0, 0.6, len(rows))
        cuts = np.array([-2.0, -1.2, -0.5, 0.2, 0.9, 1.7])
        return rows.assign(grade=np.array(CLASSES, dtype=object)[np.searchsorted(cuts, noisy)])
    amount = np.exp(3 + 0.35 * z + shift + rng.normal(0, 0.25, len(rows)))
    return rows.assign(amount=amount.round(2))


def table(
    task: str, weeks: int, rows_a_week: int, seed: int, strength: float = 1.0, shift: float = 0.0
) -> pd.DataFrame:
    return pd.concat(
        [label(inputs(rows_a_week, seed, w), task, seed + w, shift, strength) for w in range(weeks)],
        ignore_index=True,
    )


@dataclass
class Champion:
    spec: ModelSpec
    booster: object
    valid: pd.DataFrame  # answered: the rows with score, decision, outcome
    holdout: pd.DataFrame
    train: pd.DataFrame
    calibration: object
    holdout_quality: float

    def answer(self, rows: pd.DataFrame) -> pd.DataFrame:
        from loopline.training import trainer

        return rows.reset_index(drop=True).assign(**trainer.answers(self.booster, rows, self.spec))

    @property
    def unseen(self) -> pd.DataFrame:
        return pd.concat([self.valid, self.holdout], ignore_index=True)


def champion(
    spec: ModelSpec,
    weeks: int = 6,
    rows_a_week: int = 4_000,
    seed: int = 1,
    strength: float = 1.0,
    shift: float = 0.0,
    **params,
) -> Champion:
    """Trained and answered the way the train DAG and drift_flow.reference_of do it; ``params``: LightGBM overrides."""
    from loopline.core.tasks import task_of
    from loopline.training import trainer

    if params:
        training = spec.training.model_copy(update={"params": {**spec.training.params, **params}})
        spec = spec.model_copy(update={"training": training})
    frame = table(spec.task, weeks, rows_a_week, seed, strength, shift)
    split = trainer.time_split(trainer.labelled(frame, spec), spec)
    params = {**dict(spec.training.params), "seed": spec.training.seed}
    booster = trainer.train(split, spec, params).booster
    calibration = trainer.calibration_of(booster, split, spec)
    metrics = trainer.evaluate(booster, split.holdout, spec)
    model = Champion(spec, booster, pd.DataFrame(), pd.DataFrame(), split.train, calibration, 0.0)
    model.valid, model.holdout = model.answer(split.valid), model.answer(split.holdout)
    model.holdout_quality = float(metrics[task_of(spec).live_metric])
    return model
