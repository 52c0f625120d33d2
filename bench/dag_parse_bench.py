"""DAG-file parse time and task start-up time with 1, 10 and 50 model folders (``make bench-dags``).

A benchmark, not a test: it prints a table and asserts nothing. For each count it writes that
many model folders into a throw-away models dir (copies of ``models/credit_risk`` and its GE
suite, renamed: ``m000``, ``m001``, ... each with its own dataset and suite), points
``LOOPLINE_MODELS_DIR`` / ``LOOPLINE_EXPECTATIONS_DIR`` at it and measures, every time in a
fresh Python process (the way Airflow runs both):

- **full parse**: Airflow's ``DagBag`` over the project's ``dags/`` folder in one process (every
  station file, every model: six DAGs per model plus the broken-folder file), as ``airflow dags
  list``, the DAG tests and a whole-folder dag-processor pass see it;
- **file by file**: the dag-processor's own way, each file parsed on its own (``BundleDagBag(file)``)
  with nothing of Loopline's kept between files (the spec cache cleared before each), as in the
  processor's process per file;
- **task start-up**: what a task runner does before the task's code runs: set the parsing
  context to one DAG id (``_airflow_parsing_context_manager``, which ``get_parsing_context()``
  reads) and parse that DAG's one file (``BundleDagBag(file, safe_mode=False, load_op_links=False)``,
  as ``airflow.sdk.execution_time.task_runner.parse`` does). The DAG asked for is the last model's
  train DAG, so a factory that still walked every folder would show here.

Beside them, with the same environment: a **plain baseline** (a bare DAG file with one
EmptyOperator, parsed both ways) and the **floor** (``python -c 'import airflow'``).
Each figure is the median of ``--repeat`` runs. "parse" is the time inside the process
around the DagBag call (after ``import airflow``); "process" is the child's wall time from
exec to exit, which is what a task start-up costs. The marginal cost per model is the slope
between counts, (t(n2) - t(n1)) / (n2 - n1): flat when it is about the same between 1→10
and 10→50.

    python -m bench.dag_parse_bench [--counts 1 10 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
TEMPLATE = "credit_risk"
TASK_STATION = "train"
TASK_FILE = "loopline_train.py"

BARE_DAG = '''"""A bare DAG: the plain baseline of the parse benchmark."""

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag
import pendulum


@dag(dag_id="bare", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def bare():
    EmptyOperator(task_id="noop")


bare()
'''

# Runs in a fresh interpreter. argv: mode ("folder" | "perfile" | "task"), path, [dag_id, task_id, bundle_path]
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow  # noqa: F401
from airflow.dag_processing.dagbag import BundleDagBag, DagBag
from airflow.sdk.definitions._internal.dag_parsing_context import _airflow_parsing_context_manager
t1, c1 = time.perf_counter(), time.process_time()
mode, path = sys.argv[1], sys.argv[2]
if mode == "folder":
    bag = DagBag(dag_folder=path)
    wanted = None
elif mode == "perfile":
    # The dag-processor's way: each file on its own (BundleDagBag(file)), nothing of Loopline's kept between
    # files (its one cross-file state, the spec cache, is cleared), as in the processor's process per file.
    import os
    from loopline.core.spec import load_spec
    found, errors = 0, []
    for name in sorted(os.listdir(path)):
        if name.endswith(".py"):
            load_spec.cache_clear()
            one = BundleDagBag(dag_folder=os.path.join(path, name), bundle_path=path)
            found += len(one.dags)
            errors += sorted(one.import_errors)
    bag = type("Bag", (), {"dags": dict.fromkeys(range(found)), "import_errors": errors})()
    wanted = None
else:
    dag_id, task_id, bundle = sys.argv[3], sys.argv[4], sys.argv[5]
    with _airflow_parsing_context_manager(dag_id=dag_id, task_id=task_id):
        bag = BundleDagBag(dag_folder=path, safe_mode=False, load_op_links=False, bundle_path=bundle)
    wanted = dag_id
t2, c2 = time.perf_counter(), time.process_time()
tasks = len(bag.dags[wanted].tasks) if wanted in bag.dags else None
print(json.dumps({"import_s": t1 - t0, "parse_s": t2 - t1, "parse_cpu_s": c2 - c1, "dags": len(bag.dags),
                  "task_count": tasks, "errors": sorted(bag.import_errors)}))
"""


@dataclass
class Sample:
    process_s: float  # the child's wall time, exec to exit
    process_cpu_s: float  # ... and its CPU time (user + system): what other load on the machine changes least
    parse_s: float  # wall time of the DagBag call
    parse_cpu_s: float
    dags: int


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_models(root: Path, count: int) -> tuple[Path, Path]:
    """``count`` renamed copies of the template model folder and its suite under ``root``."""
    models, suites = root / "models", root / "expectations"
    models.mkdir(parents=True)
    suites.mkdir(parents=True)
    source = ROOT / "models" / TEMPLATE
    template_spec = yaml.safe_load((source / "spec.yaml").read_text())
    template_suite = json.loads(
        (ROOT / "expectations" / f"{template_spec['dataset']['expectation_suite']}.json").read_text()
    )
    for i in range(count):
        name = f"m{i:03d}"
        folder = models / name
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
        spec = dict(template_spec)
        spec["name"] = name
        spec["dataset"] = {**template_spec["dataset"], "name": name, "expectation_suite": f"{name}_batch"}
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        suite = {**template_suite, "name": f"{name}_batch", "meta": {**template_suite.get("meta", {}), "model": name}}
        (suites / f"{name}_batch.json").write_text(json.dumps(suite, indent=2))
    return models, suites


def environment(root: Path, models: Path, suites: Path) -> dict[str, str]:
    """The child's environment: Loopline's settings for a throw-away home, as ``loopline env`` exports them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "AIRFLOW__", "AIRFLOW_CTX_"))}
    env.update(LOOPLINE_HOME=str(root / "home"), LOOPLINE_MODELS_DIR=str(models), LOOPLINE_EXPECTATIONS_DIR=str(suites))
    code = "import json; from loopline.core.settings import get_settings; print(json.dumps(get_settings().as_env()))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    env.update(json.loads(done.stdout))
    env["PYTHONDONTWRITEBYTECODE"] = "0"  # bytecode caches as on a running deployment
    return env


def run_child(env: dict[str, str], *args: str) -> Sample:
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"import errors while parsing {args}: {result['errors']}")
    if args[0] == "task" and not result["task_count"]:
        raise RuntimeError(f"the task-run parse did not build {args[2]}")
    return Sample(wall, cpu, result["parse_s"], result["parse_cpu_s"], result["dags"])


def floor(env: dict[str, str]) -> Sample:
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-c", "import airflow"], env=env, check=True, capture_output=True)
    return Sample(time.perf_counter() - start, _children_cpu() - cpu, 0.0, 0.0, 0)


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def measure(counts: list[int], repeat: int, work: Path) -> dict:
    results: dict = {"counts": {}}
    for count in counts:
        root = work / f"n{count}"
        models, suites = write_models(root, count)
        env = environment(root, models, suites)
        last = f"m{count - 1:03d}"
        dag_id, task_id = f"{last}_{TASK_STATION}", "start_run"
        run_child(env, "folder", str(DAGS))  # warm the bytecode and OS caches once; not counted
        full, perfile, task = [], [], []
        for _ in range(repeat):  # interleaved, so a busy moment on the machine hits all alike
            full.append(run_child(env, "folder", str(DAGS)))
            perfile.append(run_child(env, "perfile", str(DAGS)))
            task.append(run_child(env, "task", str(DAGS / TASK_FILE), dag_id, task_id, str(DAGS)))
        results["counts"][count] = {"full": full, "perfile": perfile, "task": task}
        print(f"  {count:>3} models: full parse {median(full, 'parse_cpu_s'):.2f} s CPU ({full[0].dags} DAGs), "
              f"task start-up {median(task, 'process_cpu_s'):.2f} s CPU", flush=True)  # fmt: skip
    bare_dir = work / "bare"
    bare_dir.mkdir()
    (bare_dir / "bare.py").write_text(BARE_DAG)
    root = work / "baseline"
    env = environment(root, *write_models(root, 0))
    run_child(env, "folder", str(bare_dir))
    bare_full, bare_task, floors = [], [], []
    for _ in range(repeat):
        bare_full.append(run_child(env, "folder", str(bare_dir)))
        bare_task.append(run_child(env, "task", str(bare_dir / "bare.py"), "bare", "noop", str(bare_dir)))
        floors.append(floor(env))
    results.update(bare_full=bare_full, bare_task=bare_task, floor=floors)
    return results


def _pair(samples: list[Sample], what: str) -> str:
    return f"{median(samples, what + '_s'):.3f} / {median(samples, what + '_cpu_s'):.3f}"


def report(results: dict, repeat: int) -> str:
    counts = sorted(results["counts"])
    by = results["counts"]
    bare_full, bare_task, floors = results["bare_full"], results["bare_task"], results["floor"]
    lines = [
        f"DAG parse benchmark: median of {repeat} fresh processes each "
        f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores); "
        "every cell is wall / CPU seconds",
        "",
        "| models | DAGs | full parse | file by file | full parse, process | task start-up: parse "
        "| task start-up, process |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in counts:
        full, task = by[n]["full"], by[n]["task"]
        lines.append(
            f"| {n} | {full[0].dags} | {_pair(full, 'parse')} | {_pair(by[n]['perfile'], 'parse')} "
            f"| {_pair(full, 'process')} "
            f"| {_pair(task, 'parse')} | {_pair(task, 'process')} |"
        )
    lines += [
        f"| bare DAG (1 EmptyOperator) | 1 | {_pair(bare_full, 'parse')} | - | {_pair(bare_full, 'process')} "
        f"| {_pair(bare_task, 'parse')} | {_pair(bare_task, 'process')} |",
        f"| floor: `python -c 'import airflow'` | - | - | - | {_pair(floors, 'process')} | - "
        f"| {_pair(floors, 'process')} |",
        "",
        "marginal cost per added model, (t(b) - t(a)) / (b - a), CPU (wall in brackets):",
        "",
        "| between | full parse, ms / model | ms / generated DAG | file by file, ms / model "
        "| task start-up parse, ms / model |",
        "|---|---|---|---|---|",
    ]

    def slope(a: int, b: int, kind: str, what: str) -> float:
        return (median(by[b][kind], what) - median(by[a][kind], what)) / (b - a) * 1000

    for a, b in zip(counts, counts[1:], strict=False):
        dags_per_model = (by[b]["full"][0].dags - by[a]["full"][0].dags) / (b - a) or 1
        cpu, wall = slope(a, b, "full", "parse_cpu_s"), slope(a, b, "full", "parse_s")
        task_cpu, task_wall = slope(a, b, "task", "parse_cpu_s"), slope(a, b, "task", "parse_s")
        file_cpu, file_wall = slope(a, b, "perfile", "parse_cpu_s"), slope(a, b, "perfile", "parse_s")
        lines.append(
            f"| {a} → {b} | {cpu:.1f} ({wall:.1f}) | {cpu / dags_per_model:.1f} ({wall / dags_per_model:.1f}) "
            f"| {file_cpu:.1f} ({file_wall:.1f}) | {task_cpu:+.1f} ({task_wall:+.1f}) |"
        )
    one, top = by[counts[0]], by[counts[-1]]

    def ratio(a: list[Sample], b: list[Sample], what: str) -> str:
        return f"{median(a, what) / median(b, what):.2f}x"

    lines += [
        "",
        "ratios (CPU time):",
        f"- full parse, {counts[-1]} models vs {counts[0]}: {ratio(top['full'], one['full'], 'parse_cpu_s')}"
        f" for {counts[-1] / counts[0]:.0f}x the models",
        f"- full parse, {counts[0]} model ({one['full'][0].dags} DAGs) vs the bare DAG: "
        f"{ratio(one['full'], bare_full, 'parse_cpu_s')}",
        f"- task start-up parse, {counts[-1]} models vs {counts[0]}: {ratio(top['task'], one['task'], 'parse_cpu_s')}",
        f"- task start-up process, {counts[-1]} models vs {counts[0]}: "
        f"{ratio(top['task'], one['task'], 'process_cpu_s')}",
        f"- task start-up process, {counts[0]} model vs the bare DAG: {ratio(one['task'], bare_task, 'process_cpu_s')}",
        f"- task start-up process, {counts[0]} model vs the floor: {ratio(one['task'], floors, 'process_cpu_s')}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the generated model folders")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="loopline-dag-bench-"))
    try:
        print(f"model folders and state under {work}", flush=True)
        results = measure(sorted(args.counts), args.repeat, work)
        print()
        print(report(results, args.repeat))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
