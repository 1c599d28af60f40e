"""A one-node SLURM cluster for the tests: munged, slurmctld and slurmd started from a config in a temporary
folder, as processes of the test run, and stopped (exactly those) at the end.

``python3 tests/infra/slurm.py install`` installs the Debian packages (slurm-wlm, munge) when they are missing and
this is root with apt-get; ``.ci/run`` calls it before ``make test``. ``python3 tests/infra/slurm.py up`` starts a
cluster by hand and prints the ``SLURM_CONF`` to export, until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def install(quiet: bool = True) -> str | None:
    """Install the packages when missing and allowed (root with apt-get); return why not, or None when present."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"SLURM not installed ({', '.join(missing_binaries())} missing) and not root with apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(["apt-get", "update", "-q"], env=env, stdout=out, check=False)
    r = subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], env=env, stdout=out, check=False)
    if r.returncode != 0 or missing_binaries():
        return f"apt-get install {' '.join(PACKAGES)} failed (exit {r.returncode})"
    return None


def unavailable() -> str | None:
    """Why a local cluster cannot be started here, or None."""
    if not sys.platform.startswith("linux"):
        return "a local SLURM cluster needs Linux"
    if missing_binaries():
        why = install()
        if why:
            return why
    if os.geteuid() != 0:
        return "a local SLURM cluster is started as root (slurmd runs the jobs); not root here"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (the munge package is not installed properly)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LocalSlurm:
    """A one-node cluster configured in ``root``; :meth:`start`, then :attr:`env` for the commands, :meth:`stop`."""

    root: Path
    partition: str = "debug"
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def node(self) -> str:
        return "lbnode"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        import pwd

        r = self.root
        r.chmod(0o755)  # munged (as the munge user) goes through it to its own folder
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        munge = pwd.getpwnam("munge")
        mdir = r / "munge"
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for p in (mdir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        mdir.chmod(0o700)
        key.chmod(0o400)
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.munge_socket = mdir / "munge.socket"
        lines = {
            "ClusterName": "locbenchtest",
            "SlurmctldHost": f"{socket.gethostname()}(127.0.0.1)",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": r / "state",
            "SlurmdSpoolDir": r / "spool",
            "SlurmctldPidFile": r / "slurmctld.pid",
            "SlurmdPidFile": r / "slurmd.pid",
            "SlurmctldLogFile": r / "log" / "slurmctld.log",
            "SlurmdLogFile": r / "log" / "slurmd.log",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "ReturnToService": 2,
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=2",
            "MinJobAge": 300,
            "KillWait": 5,
            "InactiveLimit": 0,
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 60,
            "MessageTimeout": 10,
        }
        text = "\n".join(f"{k}={v}" for k, v in lines.items())
        text += (
            f"\nNodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={mem_mb} State=UNKNOWN\n"
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.conf.write_text(text)

    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        preexec = None
        if user is not None:
            import pwd

            pw = pwd.getpwnam(user)

            def preexec() -> None:
                os.setgid(pw.pw_gid)
                os.setgroups([])
                os.setuid(pw.pw_uid)

        env = dict(os.environ, **self.env)
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        """Start munged, slurmctld and slurmd; return once ``sinfo`` shows the node idle."""
        self._write_config()
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                _sbin("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
            user="munge",
        )
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not create its socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(lambda: "idle" in self.sinfo(), timeout, "the node did not come up idle")

    def _wait(self, ok, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited ({p.returncode}): {self.logs()}")
            if ok():
                return
            time.sleep(0.3)
        logs = self.logs()
        self.stop()
        raise RuntimeError(f"{what} within {timeout:.0f} s: {logs}")

    def run(self, *cmd: str) -> str:
        r = subprocess.run(cmd, env=dict(os.environ, **self.env), capture_output=True, text=True, check=False)
        return r.stdout + r.stderr

    def sinfo(self) -> str:
        return self.run("sinfo", "-h", "-o", "%P %t %D %c")

    def squeue(self) -> str:
        return self.run("squeue", "-o", "%.18i %.9P %.20j %.8T %.10M %R")

    def logs(self) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if p.is_file():
                out.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel what is left in the queue, then stop slurmd, slurmctld and munged (the processes started here)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--quiet", f"--partition={self.partition}")
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15 and self.run("squeue", "-h").strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "install"
    if cmd == "install":
        why = install(quiet=False)
        print(f"local SLURM for the tests: {why or 'available'}")
        return 0
    if cmd == "up":
        import tempfile

        cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="locbench-slurm-")))
        # Ctrl-C, or SIGTERM (a background job ignores SIGINT): stop the cluster on the way out
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}\n{cluster.sinfo()}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
        return 0
    print("usage: python3 tests/infra/slurm.py [install|up]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
