"""A real single-node Slurm cluster on loopback for the submitit_slurm launcher test.

munged (as the `munge` user, its own key and socket in a temporary folder) plus `slurmctld -D` and
`slurmd -D` with SLURM_CONF pointing at a temporary slurm.conf (free ports, state and spool in
the folder, one node with this machine's CPUs, one partition), started once per session and
stopped by PID at teardown. Needs root (slurmd runs jobs as their user) and Debian's slurm-wlm
and munge; without them the test is skipped with a warning, or fails when PRUNEBENCH_REQUIRE_SLURM
is set (CI sets it after installing the packages), so it is never skipped silently on CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["SlurmCluster", "local_slurm", "slurm_cluster"]


@dataclass
class SlurmCluster:
    conf: Path
    root: Path
    startup_s: float
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing() -> str | None:
    tools = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol")
    absent = [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin")
              is None]  # fmt: skip
    if absent:
        return f"Slurm test needs {', '.join(absent)}: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "Slurm test needs root (slurmd runs jobs as their user)"
    return None


def _wait(check, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = "\n".join(p.read_text()[-2000:] for p in logs if p.exists())
    raise RuntimeError(f"{what} did not come up in {timeout:g} s\n{tail}")


def _conf(root: Path, sock: Path) -> str:
    cpus = os.cpu_count() or 1
    return f"""ClusterName=prunebench
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _drain(env: dict[str, str], timeout: float = 60.0) -> None:
    """Cancel what is left and wait until the queue is empty: stopping slurmd under a running
    step leaves its slurmstepd and srun processes behind."""
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        if out.returncode != 0 or not out.stdout.strip():
            break
        time.sleep(0.5)
    time.sleep(2.0)  # the last step's slurmstepd reports to slurmd, then exits


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    why = _missing()
    if why:
        if os.environ.get("PRUNEBENCH_REQUIRE_SLURM"):
            pytest.fail(why)
        warnings.warn(why, stacklevel=1)
        pytest.skip(why)
    with local_slurm() as cluster:
        yield cluster


@contextmanager
def local_slurm() -> Iterator[SlurmCluster]:
    """Start the cluster, yield it, stop it (also for benchmarks/launch_grid.py)."""
    why = _missing()
    if why:
        raise RuntimeError(why)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="prunebench-slurm-"))
    os.chmod(root, 0o755)
    munge_dir = root / "munge"
    munge_dir.mkdir()
    os.chmod(munge_dir, 0o755)  # munged wants its socket folder executable by all
    shutil.chown(munge_dir, "munge", "munge")
    sock, key = munge_dir / "munge.socket", munge_dir / "munge.key"
    as_munge = ["runuser", "-u", "munge", "--"]
    procs: list[subprocess.Popen] = []
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, sock))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        subprocess.run([*as_munge, "mungekey", "-c", "-k", str(key)], check=True,
                       capture_output=True, timeout=30)  # fmt: skip
        os.chmod(key, 0o400)
        munged = [*as_munge, "munged", "-F", f"--socket={sock}", f"--key-file={key}",
                  f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
                  f"--seed-file={munge_dir}/munged.seed"]  # fmt: skip
        procs.append(subprocess.Popen(munged, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(sock.exists, 20, "munged", [munge_dir / "munged.log"])
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                 text=True, timeout=10)  # fmt: skip
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix")

        logs = [root / "slurmctld.log", root / "slurmd.log"]
        _wait(idle, 60, "slurmctld + slurmd (node idle)", logs)
        yield SlurmCluster(conf, root, time.perf_counter() - t0, env)
    finally:
        if len(procs) == 3:  # let every job and step wind down while slurmd still answers
            _drain(env)
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        _kill_leftovers(conf)
        shutil.rmtree(root, ignore_errors=True)


def _kill_leftovers(conf: Path) -> None:
    """slurmstepd, batch scripts and srun of this cluster that outlived slurmd (they inherit
    SLURM_CONF=<our conf>, which names only them), by PID."""
    import signal

    tag = f"SLURM_CONF={conf}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if tag in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
