"""Model folders whose spec does not load: reported here as this file's import error.

The station files leave a broken folder out, so the other models' DAGs stay; this file
fails to import with one line per broken folder (file, field, what is allowed), which the
Airflow UI shows under "DAG Import Errors". It defines no DAG.
"""

from __future__ import annotations

from loopline.core.dag_factory import broken_model_folders

broken = broken_model_folders()
if broken:
    raise ImportError("model folders with errors (their DAGs are not generated):\n" + "\n".join(broken))
