"""A private single-node SLURM cluster on this machine, for trying `hydra/launcher=slurm` for real.

    python scripts/local_slurm.py start DIR   # prints SLURM_CONF=DIR/slurm.conf; export it, then sbatch/sinfo/deepexp -m work
    python scripts/local_slurm.py stop DIR

Needs root and Debian's `slurm-wlm` and `munge` packages (`apt-get install -y slurm-wlm munge`); the
steps below are those of a by-hand single-node setup (munge, slurm.conf, slurmctld, slurmd). Everything but munge's daemon lives in DIR (config, state, logs, pid files) and the
daemons listen on their own ports, so /etc/slurm and a real cluster's daemons are left alone. `start`
exits 1 with one line when SLURM cannot be started here (tests skip with that line as the reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "sinfo")
CTLD_PORT, SLURMD_PORT = 6917, 6918  # not SLURM's 6817/6818, which a real installation may hold
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def config(folder: Path) -> str:
    # Addresses are given, not looked up: a CI container's hostname often resolves nowhere, and with
    # no network a DNS lookup only times out.
    host = socket.gethostname().split(".")[0]
    return "\n".join(
        [
            "ClusterName=deepexp-local",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmUser=root",
            "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none",
            f"StateSaveLocation={folder / 'ctld'}",
            f"SlurmdSpoolDir={folder / 'slurmd'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def run(args: list[str], env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """A SLURM or munge command that cannot hang the caller: a timeout reads as a failure."""
    try:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"{args[0]} did not answer within {timeout:.0f} s")


def start(folder: Path) -> str:
    """Start munged (if needed), slurmctld and slurmd; return the config path, or raise RuntimeError(reason)."""
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise RuntimeError(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        raise RuntimeError("starting slurmctld/slurmd needs root")
    folder = folder.resolve()
    for sub in ("ctld", "slurmd"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(config(folder))
    # munge authenticates every SLURM message; one daemon serves any cluster. Ask it for a credential rather
    # than look for its socket: a machine restarted without its daemons keeps a stale one, and then slurmd hangs.
    if run(["munge", "-n"], timeout=5).returncode != 0:
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        run(["su", "-s", "/bin/sh", "munge", "-c", "munged --force"])  # --force: past a stale socket and lock
        if run(["munge", "-n"], timeout=5).returncode != 0:
            raise RuntimeError(f"munged did not start (socket {MUNGE_SOCKET}): SLURM cannot authenticate")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        done = run([daemon, "-f", str(conf)], env)
        if done.returncode != 0:
            stop(folder)
            raise RuntimeError(f"{daemon} did not start: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    deadline, state = time.time() + 30, ""
    while time.time() < deadline:  # the node registers with the controller, then takes jobs
        state = run(["sinfo", "-h", "-o", "%t"], env, timeout=10).stdout.strip()
        if state == "idle":
            return str(conf)
        time.sleep(0.5)
    stop(folder)
    raise RuntimeError(f"the local SLURM node did not become idle within 30 s (state {state!r}; logs in {folder})")


def stop(folder: Path) -> None:
    """Let queued jobs finish (up to 30 s), then stop the two SLURM daemons started in `folder` and any
    job step daemon left in it (munged stays: other clusters may use it)."""
    folder = folder.resolve()
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    deadline = time.time() + 30
    while time.time() < deadline and (folder / "slurm.conf").exists():
        queue = run(["squeue", "-h"], env, timeout=10)
        if queue.returncode != 0 or not queue.stdout.strip():
            break
        time.sleep(0.5)
    daemons = []
    for name in ("slurmd.pid", "slurmctld.pid"):
        try:
            daemons.append(int((folder / name).read_text().strip()))
        except (FileNotFoundError, ValueError):
            pass
    for proc in Path("/proc").glob("[0-9]*"):  # a step daemon waits for slurmd forever once it is gone
        try:
            if proc.joinpath("comm").read_text().strip() == "slurmstepd" and Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):  # a daemon stuck in a retry loop gets KILL
        daemons = [pid for pid in daemons if signalled(pid, sig)]
        deadline = time.time() + grace
        while daemons and time.time() < deadline:
            daemons = [pid for pid in daemons if alive(pid)]
            time.sleep(0.2)


def signalled(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie our caller has not reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if argv[0] == "stop":
        stop(folder)
        return 0
    try:
        print(f"SLURM_CONF={start(folder)}")
    except RuntimeError as exc:
        print(f"local_slurm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
