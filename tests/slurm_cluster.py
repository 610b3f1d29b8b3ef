"""A private single-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd
started by hand (no systemd), each with its own socket, ports, state and pid files under one
temporary directory. Every wait has a timeout, and the daemons are stopped by the pids they wrote.

Its slurm.conf is linked at the default /etc/slurm/slurm.conf for as long as it runs: clients
find it through SLURM_CONF too, but the SLURM plugin's job step drops every SLURM_* variable
before its nested `srun`, which then reads only the default path (as on a real cluster). A
machine that already has a slurm.conf there is left alone and the cluster does not start.

Needs Debian's `slurm-wlm` and `munge` (`apt-get install -y --no-install-recommends slurm-wlm
munge`) and root (slurmd runs jobs as their users; munged runs as the `munge` user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
PARTITION = "debug"


def missing_requirements() -> str | None:
    """Why a cluster cannot start here, or None when it can."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM test cluster needs {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "SLURM test cluster needs root (slurmd and munged are started by hand)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "SLURM test cluster needs the 'munge' user that Debian's munge package creates"
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists: this machine has a SLURM configuration of its own, left untouched"
    return None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s\n{tail}")


class SlurmCluster:
    """Start with `with SlurmCluster() as cluster:`; `cluster.env` holds SLURM_CONF for clients."""

    def __init__(self, start_timeout: float = 60.0, cpus: int | None = None):
        self.start_timeout = start_timeout
        self.cpus = cpus or os.cpu_count()  # CPUs the node offers to jobs
        self.root: Path | None = None
        self.pid_files: list[Path] = []  # in start order; stopped in reverse
        self.linked = False  # whether DEFAULT_CONF is our link

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rmroute-slurm-"))
        self.root.chmod(0o755)  # munged (user munge) must reach its socket directory
        self._start_munge()
        self._write_slurm_conf()
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked = True
        for daemon, args in (("slurmctld", ["slurmctld"]), ("slurmd", ["slurmd", "-N", "localhost"])):
            pid_file = self.root / f"{daemon}.pid"
            self.pid_files.append(pid_file)
            subprocess.run(args, env=self.env, check=True, capture_output=True, timeout=30)
            _wait(pid_file.exists, self.start_timeout, f"{daemon} pid file", self.root / "log" / f"{daemon}.log")

        def node_idle() -> bool:
            state = self.run("sinfo", "-h", "-n", "localhost", "-o", "%t", timeout=10)
            return state.returncode == 0 and state.stdout.strip() == "idle"

        _wait(node_idle, self.start_timeout, "node localhost idle", self.root / "log" / "slurmctld.log")

    def _start_munge(self) -> None:
        socket_dir, key_dir = self.root / "munge", self.root / "munge-key"
        for path, mode in ((socket_dir, 0o755), (key_dir, 0o700)):  # munged refuses laxer or stricter modes
            path.mkdir(mode=mode)
            shutil.chown(path, "munge", "munge")
            path.chmod(mode)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        pid_file = socket_dir / "munged.pid"
        self.pid_files.append(pid_file)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--socket={socket_dir / 'munge.socket'}",
                        f"--key-file={key}", f"--pid-file={pid_file}", f"--log-file={key_dir / 'munged.log'}",
                        f"--seed-file={key_dir / 'munged.seed'}"], check=True, capture_output=True, timeout=30)
        _wait(pid_file.exists, self.start_timeout, "munged pid file")
        check = subprocess.run(f"munge -n -S {socket_dir / 'munge.socket'} | unmunge -S {socket_dir / 'munge.socket'}",
                               shell=True, capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"munge credential round trip failed: {check.stderr}")

    def _write_slurm_conf(self) -> None:
        ctld_port, slurmd_port = _free_ports(2)
        memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        (self.root / "log").mkdir()
        lines = {
            "ClusterName": "rmroute-test",
            "SlurmctldHost": "localhost(127.0.0.1)",
            "SlurmctldPort": ctld_port,
            "SlurmdPort": slurmd_port,
            "SlurmUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.root / 'munge' / 'munge.socket'}",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "slurmctld.pid",
            "SlurmdPidFile": self.root / "slurmd.pid",
            "SlurmctldLogFile": self.root / "log" / "slurmctld.log",
            "SlurmdLogFile": self.root / "log" / "slurmd.log",
            "MpiDefault": "none",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            # Finished jobs stay visible to squeue for 10 minutes: the profile's status command.
            "MinJobAge": 600,
            "ReturnToService": 2,
            # Use the CPU count below even where it exceeds the hardware's (oversubscription).
            "SlurmdParameters": "config_overrides",
        }
        text = "".join(f"{key}={value}\n" for key, value in lines.items())
        text += (f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory_mb} State=UNKNOWN\n"
                 f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n")
        self.conf.write_text(text)

    def cancel_jobs(self) -> None:
        """Cancel every job of this cluster (a run that timed out leaves them queued)."""
        if self.root is not None and self.conf.exists():
            try:
                self.run("scancel", "--partition", PARTITION, timeout=15)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemons this cluster started, by their pids, newest first; SIGKILL after `timeout`."""
        self.cancel_jobs()
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pid_files.clear()
        if self.linked and DEFAULT_CONF.is_symlink() and DEFAULT_CONF.readlink() == self.conf:
            DEFAULT_CONF.unlink()
        self.linked = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
