"""Canary analysis: is the canary at least as good as the champion, over the same window?

One rollout step is judged from two sources:

- the service's ``/metrics`` (Prometheus counters, read at the step's start and now):
  calls and errors per model version, so errors the service absorbed by falling
  back to the champion still count against the canary;
- the prediction log of the step's window: p95 scoring latency and the score
  distribution (PSI) of each arm, and live AUC once outcome labels have arrived.

A gate without enough data is ``pending``; a step passes when it has baked long
enough and every gate that can be judged passes (live AUC only counts once enough
labels exist). Any failing gate fails the step at once, before the bake time is
up: a broken canary must not keep its traffic for ten minutes.

The shadow phase (before the first step) is judged the same way, with the shadow's
rows (arm ``shadow``: a copy of requests the champion answered) in the canary's place,
plus the share of those rows whose decision differs from the champion's answer
(``disagreement``, from the service's counters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.spec import CanaryGates, ModelSpec
from loopline.core.tasks import HIGHER, task_of

PASS, FAIL, PENDING, SKIPPED = "pass", "fail", "pending", "skipped"
PSI_SIGNIFICANCE = 0.01  # a score shift must also be this significant (KS) to fail a step
WAIT = "wait"


@dataclass(frozen=True)
class GateResult:
    name: str
    status: str  # pass | fail | pending | skipped
    canary: float | None = None
    champion: float | None = None
    limit: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class StepVerdict:
    step: float
    status: str  # pass | fail | wait
    elapsed_seconds: float
    samples: dict[str, int]
    gates: list[GateResult] = field(default_factory=list)
    reason: str = ""
    phase: str = ""  # "shadow" for the shadow phase; "" for a canary step or a blue/green check

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        gates = ", ".join(f"{g.name}={g.status}" + (f" ({g.detail})" if g.detail else "") for g in self.gates)
        what = "shadow" if self.phase == SHADOW else f"step {self.step:.0%}"
        return f"{what}: {self.status.upper()} after {self.elapsed_seconds:.0f}s: {self.reason} [{gates}]"


# --- /metrics -------------------------------------------------------------------------------------

PREDICTIONS, ERRORS = "loopline_predictions", "loopline_prediction_errors"
COMPARED, DISAGREEMENTS = "loopline_shadow_compared", "loopline_shadow_disagreements"
SHADOW = "shadow"  # the arm (and rollout phase) that scores a copy of traffic and answers nothing


def counters_from_metrics(text: str) -> dict[str, dict[str, float]]:
    """Per model version: scored rows and failed ones, from a Prometheus text page.

    Rows a shadow scored (``arm="shadow"``) count apart (``shadow_predictions``,
    ``shadow_errors``), with the shadow's decisions compared with the answers and how
    many differed (``shadow_compared``, ``shadow_disagreements``).
    """
    from prometheus_client.parser import text_string_to_metric_families

    keys = {
        PREDICTIONS: "predictions",
        ERRORS: "errors",
        COMPARED: "shadow_compared",
        DISAGREEMENTS: "shadow_disagreements",
    }
    out: dict[str, dict[str, float]] = {k: {} for k in (*keys.values(), "shadow_predictions", "shadow_errors")}
    for family in text_string_to_metric_families(text):
        key = keys.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                version = sample.labels.get("model_version", "")
                bucket = f"shadow_{key}" if sample.labels.get("arm") == SHADOW else key
                out[bucket][version] = out[bucket].get(version, 0.0) + sample.value
    return out


def shadow_counters(counters: dict | None, shadow: str, champion: str) -> dict | None:
    """The shadow's counters beside the champion's, in the shape ``error_gate`` reads."""
    if counters is None:
        return None
    pick = {"predictions": ("shadow_predictions", "predictions"), "errors": ("shadow_errors", "errors")}
    return {
        key: {shadow: counters.get(ours, {}).get(shadow, 0.0), champion: counters.get(theirs, {}).get(champion, 0.0)}
        for key, (ours, theirs) in pick.items()
    }


def scrape(service_url: str, timeout: float = 10.0) -> dict[str, dict[str, float]]:
    import requests

    response = requests.get(f"{service_url}/metrics", timeout=timeout)
    response.raise_for_status()
    return counters_from_metrics(response.text)


def increase(before: dict[str, float], now: dict[str, float], version: str) -> float:
    """Counter increase like Prometheus' ``increase``: a restarted service (counter went down) counts from 0."""
    start, end = before.get(version, 0.0), now.get(version, 0.0)
    return end if end < start else end - start


# --- gates ----------------------------------------------------------------------------------------


def _share_status(bad: float, total: float, limit: float, min_samples: int) -> str:
    """A share-of-bad gate: judged once ``min_samples`` are in, or failed early when no remainder can save it."""
    if total >= min_samples:
        return FAIL if bad / total > limit else PASS
    if bad > limit * min_samples:  # fails whatever the remaining calls of the sample do
        return FAIL
    return PENDING


def error_gate(
    before: dict | None, now: dict | None, canary: str, champion: str, gates: CanaryGates, arm: str = "canary"
) -> GateResult:
    if before is None or now is None:
        return GateResult("error_rate", PENDING, detail="service metrics unavailable")
    errors = increase(before["errors"], now["errors"], canary)
    calls = increase(before["predictions"], now["predictions"], canary) + errors
    champ_errors = increase(before["errors"], now["errors"], champion)
    champ_calls = increase(before["predictions"], now["predictions"], champion) + champ_errors
    rate = errors / calls if calls else 0.0
    champ_rate = champ_errors / champ_calls if champ_calls else 0.0
    limit = gates.max_error_rate
    status = _share_status(errors, calls, limit, gates.min_samples)
    detail = f"{errors:.0f}/{calls:.0f} {arm} calls failed"
    return GateResult("error_rate", status, rate, champ_rate, limit, detail)


def disagreement_gate(
    before: dict | None, now: dict | None, shadow: str, gates: CanaryGates, spec: ModelSpec
) -> GateResult:
    """Shadow only: the share of rows whose decision differs from the champion's answer on the same row."""
    if spec.task == "regression":
        return GateResult("disagreement", SKIPPED, detail="a regression model decides nothing to compare")
    if before is None or now is None:
        return GateResult("disagreement", PENDING, detail="service metrics unavailable")
    compared = increase(before.get("shadow_compared", {}), now.get("shadow_compared", {}), shadow)
    differ = increase(before.get("shadow_disagreements", {}), now.get("shadow_disagreements", {}), shadow)
    rate = differ / compared if compared else 0.0
    limit = gates.max_disagreement
    status = _share_status(differ, compared, limit, gates.min_samples)
    detail = f"{differ:.0f}/{compared:.0f} decisions differ from the champion's ({rate:.1%})"
    return GateResult("disagreement", status, rate, 0.0, limit, detail)


def _arms(window: pd.DataFrame, canary: str, champion: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows each arm answered itself (fallback rows were answered by the champion for the canary's bucket)."""
    if window.empty:
        return window, window
    canary_rows = window[(window["arm"] == "canary") & (window["model_version"] == canary)]
    champion_rows = window[(window["arm"] == "champion") & (window["model_version"] == champion)]
    return canary_rows, champion_rows


def _one_row_per_applicant(rows: pd.DataFrame) -> pd.DataFrame:
    """The latest score per applicant: a re-sent application adds no evidence about the distribution.

    Counted as independent rows, repeats shrink the real sample while the tests believe
    it is large (a few applicants scored ten times each "shift" PSI and KS at will).
    """
    if "entity_hash" not in rows.columns:
        return rows
    return rows.drop_duplicates("entity_hash", keep="last")


def latency_gate(
    canary_rows: pd.DataFrame, champion_rows: pd.DataFrame, gates: CanaryGates, arm: str = "canary"
) -> GateResult:
    if min(len(canary_rows), len(champion_rows)) < gates.min_samples:
        return GateResult("p95_latency", PENDING, detail=f"{len(canary_rows)}/{gates.min_samples} {arm} rows")
    canary_p95 = float(np.quantile(canary_rows["latency_seconds"].astype(float), 0.95))
    champion_p95 = float(np.quantile(champion_rows["latency_seconds"].astype(float), 0.95))
    limit = gates.max_p95_latency_ratio * champion_p95 + gates.latency_slack_ms / 1000
    status = FAIL if canary_p95 > limit else PASS
    detail = f"{arm} p95 {canary_p95 * 1000:.1f} ms vs champion {champion_p95 * 1000:.1f} ms"
    return GateResult("p95_latency", status, canary_p95, champion_p95, limit, detail)


def psi_gate(
    canary_rows: pd.DataFrame,
    champion_rows: pd.DataFrame,
    gates: CanaryGates,
    spec: ModelSpec,
    expected: float = 0.0,
    arm: str = "canary",
) -> GateResult:
    """PSI of canary vs champion answers, less sampling noise and the expected difference.

    The answers compared are the task's (``loopline.core.tasks``): binary scores over risk
    bands, regression predictions over the champion's quantiles, multiclass class shares.

    Two samples of one distribution still show PSI ≈ (bins - 1) · (1/n + 1/m) on
    average (PSI is a symmetrised chi-square divergence), which at a 5% step's few
    hundred canary rows is close to the 0.2 threshold. Subtracting it keeps small
    windows from failing a good canary while a real shift (PSI well above 0.2) fails.
    As with drift, an effect must also be significant (two-sample KS test) to count.

    ``expected`` is the PSI between the two models' scores that the quality gate already
    measured on the same holdout and accepted (``loopline.expected_score_psi``): a model
    retrained after drift rightly scores the shifted world differently from the old
    champion. The gate fails what goes beyond it: a canary that behaves differently live
    than it did in evaluation (training/serving skew, a broken feature, a wrong model).
    """
    task = task_of(spec)
    canary_rows, champion_rows = _one_row_per_applicant(canary_rows), _one_row_per_applicant(champion_rows)
    n, m = len(canary_rows), len(champion_rows)
    if min(n, m) < gates.min_samples:
        return GateResult("score_psi", PENDING, detail=f"{n}/{gates.min_samples} {arm} applicants")
    raw = task.output_shift(champion_rows, canary_rows)
    value = max(0.0, raw - (task.output_bins(spec) - 1) * (1 / n + 1 / m))
    limit = gates.max_score_psi + max(0.0, expected)
    p_value = task.output_test(champion_rows, canary_rows)
    status = FAIL if value > limit and p_value < PSI_SIGNIFICANCE else PASS
    shift = task.describe_shift(champion_rows, canary_rows)
    detail = f"PSI {raw:.3f} ({value:.3f} beyond noise), p={p_value:.2g}, {shift}"
    if expected > 0:
        detail += f", {expected:.3f} expected from evaluation"
    return GateResult("score_psi", status, value, 0.0, limit, detail)


def quality_gate(
    canary_rows: pd.DataFrame,
    champion_rows: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    gates: CanaryGates,
    spec: ModelSpec,
) -> GateResult:
    """The task's live metric per arm on the predictions whose outcome is known (joined by pseudonymous entity)."""
    task = task_of(spec)
    name = f"live_{task.live_metric}"
    if outcomes is None or outcomes.empty or canary_rows.empty or champion_rows.empty:
        return GateResult(name, SKIPPED, detail="no outcome labels yet")
    labels = outcomes[["entity_hash", "outcome"]].drop_duplicates("entity_hash", keep="last")
    canary_l = canary_rows.merge(labels, on="entity_hash")
    champion_l = champion_rows.merge(labels, on="entity_hash")
    if min(len(canary_l), len(champion_l)) < gates.min_labelled:
        return GateResult(name, SKIPPED, detail=f"{len(canary_l)}/{gates.min_labelled} labelled canary rows")
    canary_q, champion_q = task.live_quality(canary_l, spec), task.live_quality(champion_l, spec)
    if canary_q is None or champion_q is None:
        return GateResult(name, SKIPPED, detail=f"{task.live_metric} not computable (e.g. labels of one class only)")
    drop = task.quality_drop(canary_q, champion_q)
    higher = task.metrics[task.live_metric] == HIGHER
    limit = champion_q - gates.max_quality_drop if higher else champion_q + gates.max_quality_drop
    status = FAIL if drop > gates.max_quality_drop else PASS
    return GateResult(name, status, canary_q, champion_q, limit, f"{len(canary_l)} labelled canary rows")


def judge_step(
    step: float,
    elapsed_seconds: float,
    window: pd.DataFrame,
    before: dict | None,
    now: dict | None,
    champion: str,
    canary: str,
    gates: CanaryGates,
    bake_seconds: float,
    max_step_seconds: float,
    spec: ModelSpec,
    outcomes: pd.DataFrame | None = None,
    expected_score_psi: float = 0.0,
) -> StepVerdict:
    canary_rows, champion_rows = _arms(window, canary, champion)
    results = [
        error_gate(before, now, canary, champion, gates),
        latency_gate(canary_rows, champion_rows, gates),
        psi_gate(canary_rows, champion_rows, gates, spec, expected_score_psi),
        quality_gate(canary_rows, champion_rows, outcomes, gates, spec),
    ]
    samples = {"canary": len(canary_rows), "champion": len(champion_rows)}
    return verdict(step, elapsed_seconds, samples, results, bake_seconds, max_step_seconds)


def judge_shadow(
    elapsed_seconds: float,
    window: pd.DataFrame,
    before: dict | None,
    now: dict | None,
    champion: str,
    shadow: str,
    gates: CanaryGates,
    bake_seconds: float,
    max_step_seconds: float,
    spec: ModelSpec,
    expected_score_psi: float = 0.0,
) -> StepVerdict:
    """The shadow phase: the shadow's copy of each request vs the champion's answer, over the same window.

    The same gates as a canary step (errors, p95 latency, score PSI with the same allowance),
    plus decision disagreement; live quality waits for the canary steps (outcomes come late).
    """
    if window.empty:
        shadow_rows = champion_rows = window
    else:
        shadow_rows = window[(window["arm"] == SHADOW) & (window["model_version"] == shadow)]
        champion_rows = window[(window["arm"] == "champion") & (window["model_version"] == champion)]
    before_view, now_view = shadow_counters(before, shadow, champion), shadow_counters(now, shadow, champion)
    results = [
        error_gate(before_view, now_view, shadow, champion, gates, arm=SHADOW),
        disagreement_gate(before, now, shadow, gates, spec),
        latency_gate(shadow_rows, champion_rows, gates, arm=SHADOW),
        psi_gate(shadow_rows, champion_rows, gates, spec, expected_score_psi, arm=SHADOW),
    ]
    samples = {"shadow": len(shadow_rows), "champion": len(champion_rows)}
    judged = verdict(0.0, elapsed_seconds, samples, results, bake_seconds, max_step_seconds)
    return replace(judged, phase=SHADOW)


def verdict(
    step: float,
    elapsed_seconds: float,
    samples: dict[str, int],
    results: list[GateResult],
    bake_seconds: float,
    max_step_seconds: float,
) -> StepVerdict:
    """A failed gate fails at once; a pass needs the bake time and no gate still pending; time runs out."""
    failed = [g.name for g in results if g.status == FAIL]
    pending = [g.name for g in results if g.status == PENDING]
    if failed:
        status, reason = FAIL, f"gate failed: {', '.join(failed)}"
    elif not pending and elapsed_seconds >= bake_seconds:
        status, reason = PASS, "every gate passed"
    elif elapsed_seconds >= max_step_seconds:
        status, reason = FAIL, f"not enough traffic to judge {', '.join(pending)} within {max_step_seconds:.0f}s"
    else:
        waiting = f"waiting for {', '.join(pending)}" if pending else f"baking ({bake_seconds:.0f}s)"
        status, reason = WAIT, waiting
    return StepVerdict(step, status, round(elapsed_seconds, 1), samples, results, reason)
