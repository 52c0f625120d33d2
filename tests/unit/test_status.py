"""`loopline status`: a rejected version shows the gate's failed checks with their numbers, not only "rejected"."""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from loopline.core.tasks import TASKS
from loopline.ops.status import version_lines
from loopline.training.gate import GATE_FAILED_TAG, judge


def registered(version: str, **tags: str) -> ModelVersion:
    return ModelVersion("churn", version, 0, tags=[ModelVersionTag(k, v) for k, v in tags.items()], aliases=[])


def test_a_rejected_version_shows_each_failed_metric_its_value_and_bound():
    holdout = {"auc": 0.91, "decision_share": 0.0, "precision_at_threshold": 0.0, "positive_rate": 0.7}
    result = judge(holdout, {"min_auc": 0.95}, TASKS["binary"])
    tags = {"loopline.gate_decision": result.decision, GATE_FAILED_TAG: result.failed(), "loopline.data_version": "v2"}
    lines = version_lines(registered("3", **tags), [])
    assert "gate rejected" in lines[0] and "data v2" in lines[0]
    shown = "\n".join(lines[1:])
    assert "min_auc 0.91 (bound 0.95)" in shown
    assert "decision_share_above_0 0 (bound 0)" in shown
    assert "decision_share_below_1" not in shown  # only what failed


def test_a_passing_version_is_one_line():
    lines = version_lines(registered("1", **{"loopline.gate_decision": "champion"}), ["champion"])
    assert len(lines) == 1 and "champion" in lines[0] and "gate champion" in lines[0]
