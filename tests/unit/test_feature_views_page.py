"""Feature views on the Loopline page and in ``loopline features``: owner, schedule, last materialisation,
freshness and the models that use each, from the definitions, a real Feast store (SQLite) and the specs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("feast")

from loopline.core.settings import get_settings  # noqa: E402
from loopline.core.spec import load_spec  # noqa: E402
from loopline.features.definitions import load_definitions  # noqa: E402
from loopline.features.store import FeatureStore, StoreConfig  # noqa: E402
from loopline.ops import ui  # noqa: E402
from loopline.ops.feature_views import gather_feature_views, when_text  # noqa: E402
from tests.unit.test_feature_definitions import CUSTOMERS, STORES, spec_dict, write_model, write_repo  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A throw-away home whose repo has an online view (customer_activity, @hourly) and an offline one."""
    repo = write_repo(
        tmp_path,
        {"customers.yaml": CUSTOMERS, "stores.yaml": STORES, "store_load.py": "def compute(events):\n    return 1\n"},
    )
    models = tmp_path / "models"
    write_model(models, spec_dict("basket", "customer_id", ["customer_activity:spend_1h"]))
    write_model(models, spec_dict("churn", "customer_id", ["customer_activity:orders_7d"]))
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(models))
    monkeypatch.setenv("LOOPLINE_FEATURE_REPO", str(repo))
    get_settings.cache_clear()
    load_spec.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    load_spec.cache_clear()


def materialise(settings, newest: datetime, end: datetime) -> None:
    """customer_activity's values up to ``newest``, materialised by a run that ended at ``end``."""
    store = FeatureStore.open(load_definitions(settings.feature_repo), StoreConfig(root=settings.feast_root))
    store.apply()
    rows = pd.DataFrame(  # naive times: the store reads them as UTC
        {
            "customer_id": ["a", "b", "a"],
            "ordered_at": pd.to_datetime([newest - timedelta(hours=2), newest - timedelta(minutes=5), newest]),
            "spend_1h": [1.0, 2.0, 3.0],
            "orders_7d": np.array([1, 1, 2], dtype="int64"),
            "last_channel": ["web", "pos", "web"],
        }
    )
    store.write_offline("customer_activity", rows, batch_id="b1")
    store.materialize("customer_activity", end)


def test_before_anything_is_materialised_an_online_view_is_stale_and_no_store_is_created(settings):
    found = gather_feature_views(settings, now=NOW)
    by_name = {v.name: v for v in found.views}
    activity, load = by_name["customer_activity"], by_name["store_load"]
    assert (activity.owner, activity.schedule, activity.used_by) == ("growth", "@hourly", ["basket", "churn"])
    assert activity.last_materialized == "" and activity.stale and activity.freshness == "STALE: nothing materialised"
    assert (load.owner, load.schedule, load.used_by, load.freshness) == ("ops", "*/15 * * * *", [], "offline only")
    assert not settings.feast_root.exists()  # reading the page never creates a store


def test_last_materialisation_and_freshness_come_from_the_store(settings):
    end = NOW - timedelta(minutes=10)
    materialise(settings, newest=NOW - timedelta(minutes=30), end=end)
    activity = {v.name: v for v in gather_feature_views(settings, now=NOW).views}["customer_activity"]
    assert datetime.fromisoformat(activity.last_materialized) == end
    assert datetime.fromisoformat(activity.newest) == NOW - timedelta(minutes=30)
    assert activity.age_seconds == 1800 and activity.period_seconds == 3600 and not activity.stale
    assert activity.freshness == "30 min old (every 1 h)"
    # Three hours on, two hourly runs were missed: stale.
    later = {v.name: v for v in gather_feature_views(settings, now=NOW + timedelta(hours=3)).views}
    assert later["customer_activity"].stale
    assert later["customer_activity"].freshness == "STALE: 3.5 h old (every 1 h)"


def test_the_cli_shows_the_same_columns(settings):
    from loopline.ops.cli import app

    now = datetime.now(UTC)  # the command reads the clock: the module's NOW is minutes old when tests run long
    materialise(settings, newest=now - timedelta(minutes=30), end=now - timedelta(minutes=10))
    result = CliRunner().invoke(app, ["features"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "customer_activity  owner growth  entities customer (customer_id)  ttl 2d  schedule @hourly  online" in out
    assert f"last materialisation: {when_text((now - timedelta(minutes=10)).isoformat())}" in out
    assert "freshness: 30 min old (every 1 h)" in out
    assert "used by: basket, churn" in out
    assert "store_load  owner ops" in out and "offline only" in out


def test_the_page_has_a_row_per_view_and_the_json_the_same(settings):
    now = datetime.now(UTC)  # the page reads the clock: the module's NOW is minutes old in a long run
    materialise(settings, newest=now - timedelta(hours=5), end=now - timedelta(hours=4))
    overview = ui.gather(settings, models=["basket"])
    page = ui.render_html(overview)
    assert '<section id="feature-views"><h2>Feature views (2)</h2>' in page
    row = page.split("<b>customer_activity</b>")[1].split("</tr>")[0]
    assert "<td>growth</td>" in row and "@hourly" in row and "dags/feature_customer_activity" in row
    assert when_text((now - timedelta(hours=4)).isoformat()) in row
    assert '<span class="fresh-stale"' in row and "STALE: 5.0 h old (every 1 h)" in row
    assert '<a href="#model-basket">basket</a>, churn' in row  # a model on the page is a jump to its section
    offline = page.split("<b>store_load</b>")[1].split("</tr>")[0]
    assert "offline only" in offline and "<td>ops</td>" in offline
    data = overview.to_dict()["features"]
    view = next(v for v in data["views"] if v["name"] == "customer_activity")
    assert view["owner"] == "growth" and view["used_by"] == ["basket", "churn"] and view["stale"] is True
    assert view["freshness"].startswith("STALE: 5.0 h old")


def test_an_unreadable_store_is_a_note_and_the_definitions_still_show(settings):
    settings.feast_root.mkdir(parents=True)
    (settings.feast_root / "registry.db").write_text("not a registry")
    found = gather_feature_views(settings, now=NOW)
    assert [v.name for v in found.views] == ["customer_activity", "store_load"]
    assert found.errors and found.errors[0].startswith("feature store")
    activity = found.views[0]
    assert activity.freshness == "unknown (store not readable)" and activity.last_materialized == ""
    page = ui.render_html(ui.gather(settings, models=[]))
    assert "feature store" in page and "<b>customer_activity</b>" in page


def test_refused_definitions_and_impossible_uses_are_listed(settings):
    (settings.feature_repo / "zz.yaml").write_text("feature_views: {}\n")
    write_model(settings.models_dir, spec_dict("ghost", "customer_id", ["nowhere:x"]))
    load_spec.cache_clear()
    found = gather_feature_views(settings, now=NOW)
    assert any("zz.yaml" in r for r in found.refused)
    assert any("unknown feature view 'nowhere'" in p for p in found.problems)
    page = ui.render_html(ui.gather(settings, models=[]))
    assert "REFUSED feature_repo/zz.yaml" in page and "MODEL " in page
