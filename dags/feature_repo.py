"""Feature repo files or definitions that do not load: reported here as this file's import error.

`dags/feature_pipelines.py` leaves a refused file or view out, so every other view's pipeline DAG
stays; this file fails to import with one line per refused file or definition (file, field, what
to fix), which the Airflow UI shows under "DAG Import Errors". It defines no DAG.
"""

from __future__ import annotations

from loopline.features.pipeline_dags import broken_feature_files

broken = broken_feature_files()
if broken:
    raise ImportError("feature repo definitions with errors (their pipelines are not generated):\n" + "\n".join(broken))
