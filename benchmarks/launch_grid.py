"""The acceptance grid of issue 16 through each Hydra launcher: 2 methods × 2 seeds = 4 studies of
3 trials each, then `prunebench compare compare.sweep=latest` over the seeds.

    PYTHONPATH=. python benchmarks/launch_grid.py [--launchers basic joblib submitit_local
        submitit_slurm] [--epochs 1] [--out results/benchmarks/launch_grid_cpu.txt]
        [--extra study.fidelity.mode=halving …]

Each launcher gets a fresh outputs folder (so each trains its own two baselines) and the same
command; only `hydra/launcher=…` and its settings differ. Checked per launcher: 4 JSON lines
without errors, 4 studies in the Optuna store with exactly 3 finished trials each, 4 parent runs
in MLflow, and a compare table with mean ± std over seeds [0, 1]. `submitit_slurm` runs against a
one-node Slurm started on loopback (tests/slurm_cluster.py; needs root, slurm-wlm and munge).
The table's wall time is the whole `prunebench study -m …` command, baselines included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.runtime.provenance import git_state, hardware, versions
from harness.tracking import mlflow_client

REPO = Path(__file__).resolve().parents[1]
GRID = [
    "method=l1,random", "seed=0,1", "data=digits", "model=resnet20", "study.n_trials=3",
    "measure.latency=false", "study.target.low=0.3",
]  # fmt: skip
LAUNCHERS = {
    "basic": [],  # Hydra's default: the jobs one after another in this process
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60"],
    "submitit_slurm": [
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
        "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=60",
    ],
}  # fmt: skip
TRIALS, STUDIES = 3, 4


def _prunebench(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)


def check_grid(outputs: Path, jobs: list[dict], halving: bool = False) -> list[str]:
    """What is wrong with a finished grid (empty when it is what the issue asks for). A halving
    grid's study.n_trials counts full-budget trials: each study has exactly that many COMPLETE
    ones (and stopped trials besides)."""
    problems = []
    if len(jobs) != STUDIES or any("error" in j for j in jobs):
        problems.append(f"{len(jobs)} job lines, errors: {[j.get('error') for j in jobs]}")
    storage = f"sqlite:///{outputs / 'optuna.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    finished = (TrialState.COMPLETE,) if halving else (TrialState.COMPLETE, TrialState.PRUNED)
    what = "full-budget" if halving else "finished"
    for name in names:
        n = len(optuna.load_study(study_name=name, storage=storage).get_trials(states=finished))
        if n != TRIALS:
            problems.append(f"{name}: {n} {what} trials, not {TRIALS}")
    if len(names) != STUDIES:
        problems.append(f"{len(names)} studies, not {STUDIES}")
    client = mlflow_client(f"sqlite:///{outputs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prunebench")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'study'")
    if len(parents) != STUDIES:
        problems.append(f"{len(parents)} parent runs, not {STUDIES}")
    return problems


def run_launcher(
    name: str, root: Path, env: dict[str, str], epochs: int, extra: list[str] = ()
) -> dict:
    cwd = root / name
    cwd.mkdir()
    t0 = time.perf_counter()
    budget = [f"train.epochs={epochs}", f"finetune.epochs={epochs}"]
    grid = _prunebench(
        ["study", "-m", *GRID, *budget, *extra, *LAUNCHERS[name], "outputs=out"], cwd, env
    )
    wall = time.perf_counter() - t0
    row = {"launcher": name, "wall_s": wall, "rc": grid.returncode}
    if grid.returncode != 0:
        return {**row, "problems": [grid.stderr.strip().splitlines()[-1:]]}
    jobs = [json.loads(line) for line in grid.stdout.strip().splitlines()]
    row["jobs"] = len(jobs)
    problems = check_grid(cwd / "out", jobs, halving="study.fidelity.mode=halving" in extra)
    compare = _prunebench(["compare", "compare.sweep=latest", "outputs=out"], cwd, env)
    if compare.returncode != 0:
        problems.append(f"compare: {compare.stderr.strip().splitlines()[-1:]}")
    else:
        md = (cwd / json.loads(compare.stdout)["table_md"]).read_text()  # relative to its cwd
        if "±" not in md or "seeds [0, 1]" not in md:
            problems.append("compare table lacks mean ± std over seeds [0, 1]")
    return {**row, "problems": problems}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launchers", nargs="+", default=list(LAUNCHERS), choices=list(LAUNCHERS))
    p.add_argument("--epochs", type=int, default=1, help="baseline and fine-tuning epochs")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every study, "
                   "e.g. study.fidelity.mode=halving (with --epochs ≥ 2)")  # fmt: skip
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="prunebench-grid-") as tmp, ExitStack() as stack:
        for name in args.launchers:
            if name == "submitit_slurm":
                sys.path.insert(0, str(REPO))
                from tests.slurm_cluster import local_slurm

                cluster = stack.enter_context(local_slurm())
                env["SLURM_CONF"] = str(cluster.conf)
            rows.append(run_launcher(name, Path(tmp), env, args.epochs, args.extra))
            if name == "submitit_slurm":
                rows[-1]["note"] = f"one-node Slurm started in {cluster.startup_s:.1f} s"
            print(rows[-1], file=sys.stderr, flush=True)
    hw = hardware()
    sha, dirty = git_state()
    state = {True: "dirty", False: "clean", None: "dirty flag unknown"}[dirty]
    lines = [
        f"# PYTHONPATH=. python {shlex.join(['benchmarks/launch_grid.py', *sys.argv[1:]])}",
        f"# git {sha} ({state}), {hw['cpu']}, {hw['cores']} cores, GPU: {hw['gpu']}, "
        + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"# grid: prunebench study -m {' '.join(GRID)} train.epochs={args.epochs} "
        f"finetune.epochs={args.epochs} {' '.join(args.extra)} hydra/launcher=<launcher> "
        "outputs=out",
        "# seeds 0, 1 (the grid's); OMP_NUM_THREADS=1 per process; wall s = the whole grid, "
        "the two baselines included",
        f"{'launcher':16} {'jobs':>4} {'wall s':>8}  result",
    ]
    for r in rows:
        kind = "full-budget trials" if "study.fidelity.mode=halving" in args.extra else "trials"
        verdict = f"ok (4 studies × 3 {kind}, compare mean ± std over 2 seeds)"
        result = verdict if not r["problems"] else "FAILED: " + "; ".join(map(str, r["problems"]))
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"{r['launcher']:16} {r.get('jobs', 0):4d} {r['wall_s']:8.1f}  {result}{note}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if any(r["problems"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
