"""The holdout metrics of a model with and without its stored features (docs/features.md, "The card_fraud demo").

    .venv/bin/python -m bench.feature_lift [model] [--weeks 8] [--rows 4000] [--seed 0]

Generated data, the feature pipeline's own computation, a real Feast store in a temporary folder,
the platform's training recipe (``loopline.ops.feature_lift``). Prints both, and the training set's lineage.
"""

from __future__ import annotations

import argparse
import json
import time

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ops.feature_lift import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="card_fraud")
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4000, help="rows per week")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = get_settings()
    began = time.perf_counter()
    lift = measure(load_spec(args.model, settings.models_dir), settings, args.weeks, args.rows, args.seed)
    print(lift.table())
    print(f"({time.perf_counter() - began:.0f} s)")
    print(json.dumps(lift.lineage, indent=2, default=str))


if __name__ == "__main__":
    main()
