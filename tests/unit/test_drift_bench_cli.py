"""bench.drift_bench's arguments, scenarios, table and the NannyML-unavailable path (no comparison, no timing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench import drift_bench as bench


def test_defaults_are_the_full_run_and_quick_shrinks_it():
    args = bench.parse_args([])
    assert (args.stable, args.repeats, args.window_rows) == (50, 10, 2_000)
    assert args.sizes == [0.1, 0.25, 0.5, 1.0] and args.models == ["credit_risk", "delivery_time"]
    quick = bench.parse_args(["--quick", "--models", "credit_risk"])
    assert (quick.stable, quick.repeats) == (5, 2) and quick.models == ["credit_risk"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "0"])


def test_scenarios_shift_one_two_many_and_the_least_important_input():
    ranked = ["a", "b", "c", "d", "e", "f", "z"]
    plan = bench.scenarios(ranked, [0.1, 0.5, 1.0])
    assert plan[0] == bench.Scenario("stable", "stable", (), 0.0)
    by_kind = {kind: [s for s in plan if s.kind == kind] for kind in ("one", "two", "many", "insensitive")}
    assert [s.size for s in by_kind["one"]] == [0.1, 0.5, 1.0] and by_kind["one"][0].columns == ("a",)
    assert by_kind["two"][0].columns == ("a", "b") and by_kind["many"][0].columns == ("a", "b", "c", "d", "e")
    assert [(s.columns, s.size) for s in by_kind["insensitive"]] == [(("z",), 0.5), (("z",), 1.0)]
    assert [(s.name, s.columns) for s in plan if s.kind == "missing"] == [
        ("missing 30%", ("a",)),
        ("missing 60%", ("a",)),
    ]


def test_blank_empties_the_scenarios_columns_in_its_share_of_rows():
    frame = pd.DataFrame({"a": np.arange(4_000, dtype=float), "b": 1.0})
    out = bench.blank(frame, bench.Scenario("missing 30%", "missing", ("a",), 0.3), seed=1)
    assert out["a"].isna().mean() == pytest.approx(0.3, abs=0.03) and out["b"].notna().all()
    assert frame["a"].notna().all()  # the input is untouched


def test_apply_shift_moves_only_the_scenarios_columns_by_size_sds():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [5.0, 6.0]})
    out = bench.apply_shift(frame, bench.Scenario("one +0.5sd", "one", ("a",), 0.5), {"a": 2.0, "b": 1.0})
    assert out["a"].tolist() == [2.0, 3.0] and out["b"].tolist() == [5.0, 6.0]
    assert frame["a"].tolist() == [1.0, 2.0]  # the input is untouched


def test_table_aligns_columns_and_prints_missing_values_as_na():
    lines = bench.format_table(["scenario", "rate"], [["stable", 0.05], ["one +1sd", None], ["x", float("nan")]])
    assert len({len(line) for line in lines}) == 1
    assert lines[1].startswith("stable") and lines[1].endswith("0.050") and lines[2].endswith("n/a")
    assert bench.ratio(10.0, 2.0) == "5.0x" and bench.ratio(None, 1.0) == "n/a" and bench.ratio(1.0, 0.0) == "n/a"


def _records(n_est):
    stable = dict(scenario="stable", verdict="stable", L_flagged=set(), E_flagged={"b"}, E_dataset=False)
    shifted = dict(scenario="one +1sd", verdict="feature_drift", L_flagged={"a"}, E_flagged={"a"}, E_dataset=False)
    truth = {"auc": 0.8, "precision": 0.5, "recall": 0.6}
    common = dict(n_columns=4, realised=0.8, L_est=0.78, N_est=n_est, truth=truth, live_realised=0.8, L_live_est=0.78)
    extra = {"precision_at_threshold": 0.5, "recall_at_threshold": 0.6}
    return [
        {**r, **common, "L_extra": extra, "N_extra": {"roc_auc": n_est, "precision": 0.5, "recall": 0.6}}
        for r in (stable, shifted)
    ]


def test_summary_and_target_lines_from_records_including_no_nannyml():
    plan = [bench.Scenario("stable", "stable", (), 0.0), bench.Scenario("one +1sd", "one", ("a",), 1.0)]
    rows = bench.summarise(plan, _records(0.75))
    assert rows[0][:2] == ["stable", 1] and rows[0][5] == 0.25  # Evidently flagged 1 of 4 stable inputs
    assert rows[1][4] == 1.0 and rows[1][2] == 1.0
    spec = SimpleNamespace(task="binary")
    outcome = {"plan": plan, "records": _records(0.75), "nannyml": "nannyml 0.13.1", "live": "auc"}
    outcome["per_window"] = {"L": 0.01, "L_est": 0.002, "E": 1.0, "N": 0.02}
    lines = bench.verdict_lines(SimpleNamespace(task="binary", spec=spec), outcome)
    assert "per-column detection over all shifted windows: Loopline 1.000, Evidently 1.000" in lines[1]
    assert lines[1].endswith("met") and "MISSED" not in lines[2]  # 0.02 < 0.05
    assert lines[-1].endswith("met") and "100.0x" in lines[-1]
    unavailable = {**outcome, "records": _records(None), "nannyml": "unavailable"}
    unavailable["per_window"] = {**outcome["per_window"], "N": None}
    lines = bench.verdict_lines(SimpleNamespace(task="binary", spec=spec), unavailable)
    assert "NannyML unavailable" in lines[2] and "NannyML estimator n/a" in lines[-1]


def test_a_regressors_estimates_are_compared_on_the_mae_and_its_smape_error_is_shown():
    plan = [bench.Scenario("stable", "stable", (), 0.0), bench.Scenario("one +1sd", "one", ("a",), 1.0)]
    records = [
        {**r, "realised": 3.0, "L_est": 3.1, "N_est": 3.3, "live_realised": 0.1, "L_live_est": 0.102}
        for r in _records(0.0)
    ]
    outcome = {"plan": plan, "records": records, "nannyml": "nannyml 0.13.1", "live": "smape", "compared": "mae"}
    outcome["per_window"] = {"L": 0.05, "L_est": 0.002, "L_judge": 0.003, "E": 1.0, "N": 0.02}
    lines = bench.verdict_lines(SimpleNamespace(task="regression", spec=SimpleNamespace(task="regression")), outcome)
    assert "MAE (minutes), all windows: Loopline DLE-style 0.1000, NannyML DLE 0.3000" in lines[2]
    assert lines[2].endswith("met") and "sMAPE" in lines[3] and "2.0% of realised" in lines[3]
    assert "NannyML / Loopline estimator 10.0x" in lines[-1] and "0.0030: 6.7x faster" in lines[-1]


def test_missing_inputs_are_scored_in_lines_of_their_own_not_in_the_totals():
    gone = bench.Scenario("missing 30%", "missing", ("a",), 0.3)
    plan = [bench.Scenario("stable", "stable", (), 0.0), bench.Scenario("one +1sd", "one", ("a",), 1.0), gone]
    blanked = {**_records(0.75)[1], "scenario": gone.name, "verdict": "performance_risk", "L_flagged": set()}
    blanked.update(live_realised=0.70, L_live_est=0.78, realised=0.70, N_est=0.79)
    blanked["L_extra"] = {**blanked["L_extra"], "missing_quality": 0.72}
    records = [*_records(0.75), blanked]
    outcome = {"plan": plan, "records": records, "nannyml": "nannyml 0.13.1", "live": "auc", "compared": "auc"}
    outcome.update(per_window={"L": 0.01, "L_est": 0.002, "E": 1.0, "N": 0.02}, reference_realised=0.8)
    spec = SimpleNamespace(task="binary", monitoring=SimpleNamespace(max_estimated_drop=0.05))
    lines = bench.verdict_lines(SimpleNamespace(task="binary", spec=spec), outcome)
    assert "Loopline 1.000, Evidently 1.000" in lines[1]  # the blanked window, unflagged, is not in the total
    assert lines[-2] == "inputs gone missing (a blanked; labels from the values before):"
    assert "missing 30%: performance_risk 1/1; realised AUC 0.800 on the unseen rows -> 0.7000" in lines[-1]
    assert "what-if 0.0200, Loopline's label-free estimator 0.0800, NannyML (AUC) 0.0900" in lines[-1]


def test_a_missing_uv_says_nannyml_is_unavailable_and_does_not_raise(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.sys, "executable", str(tmp_path / "no-python-here"))
    python, why = bench.nannyml_python(tmp_path / "venv")
    assert python is None and why.startswith("NannyML unavailable")


def test_realised_metrics_come_from_the_windows_labels():
    spec = SimpleNamespace(task="binary", training=SimpleNamespace(decision_threshold=0.5))
    window = pd.DataFrame({"outcome": [0, 0, 1, 1], "score": [0.1, 0.6, 0.4, 0.9]})
    got = bench.realised(SimpleNamespace(task="binary", spec=spec), window)
    assert got == {"auc": 0.75, "precision": 0.5, "recall": 0.5}
    reg = bench.realised(SimpleNamespace(task="regression", spec=spec), window.assign(outcome=[1.0, 2.0, 3.0, 4.0]))
    assert np.isclose(reg["mae"], np.mean(np.abs(np.array([1, 2, 3, 4]) - window["score"].to_numpy())))


def test_a_prior_shift_scenario_is_graded_with_the_windows_labels_in_a_line_of_its_own():
    plan = bench.scenarios(["a", "b", "c", "d", "e", "f", "z"], [1.0])
    assert plan[-1] == bench.Scenario("prior shift", "prior", (), 1.0)
    prior = bench.Scenario("prior shift", "prior", (), 1.0)
    plan = [bench.Scenario("stable", "stable", (), 0.0), bench.Scenario("one +1sd", "one", ("a",), 1.0), prior]
    stable, shifted = _records(0.75)
    moved = {**stable, "scenario": prior.name, "labelled_verdict": "concept_drift", "observed_mean": 0.3}
    records = [{**stable, "labelled_verdict": "stable", "observed_mean": 0.15}, shifted, moved]
    rows = bench.summarise(plan, records)
    assert rows[2][-1] == 1.0 and rows[0][-1] == 0.0 and rows[1][-1] is None  # L concept: with the labels
    outcome = {"plan": plan, "records": records, "nannyml": "nannyml 0.13.1", "live": "auc", "compared": "auc"}
    outcome.update(per_window={"L": 0.01, "L_est": 0.002, "E": 1.0, "N": 0.02}, reference_mean=0.154)
    lines = bench.verdict_lines(SimpleNamespace(task="binary", spec=SimpleNamespace(task="binary")), outcome)
    assert "Loopline 1.000, Evidently 1.000" in lines[1]  # the prior window (no input moved) is not in the totals
    assert lines[-1].startswith("prior shift (positive rate 0.154 on the unseen rows -> 0.3), inputs unchanged")
    assert "concept_drift 1/1; before any label stable 1; stable windows with their labels: 0/1" in lines[-1]
