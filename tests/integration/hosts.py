"""Real Ray hosts on one machine: a head and worker hosts, each in its own Linux network namespace.

Each host is a network namespace with its own address on a bridge made here (veth pair, loopback up) and a
private mount namespace with a tmpfs on /tmp/ray, so no two hosts share Ray's temp dir (they would overwrite
each other's runtime-env working dirs; worker nodes take the head's temp dir, so --temp-dir cannot separate
them). Folders listed in ``hidden`` are covered by an empty tmpfs on the workers: files only the head's host
has. The bridge's own address (``bridge_ip``) is this machine's side, where the tests' servers listen.
Every host runs `ray start` from the project's environment (its bin/ first on PATH, so jobs run its python),
with token authentication on. Killing a host kills every process in its namespace. Everything is torn down
by :meth:`close`, also after a failure. Needs root, iproute2 (`ip netns`) and util-linux (`unshare`).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out


def namespaces_available() -> str | None:
    """None when this process can make network namespaces, else why not (one line)."""
    if os.geteuid() != 0:
        return "multi-host tests need root (network namespaces, mounts)"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "multi-host tests need iproute2 (`ip`) and util-linux (`unshare`)"
    probe = f"osprobe{os.getpid() % 100000}"
    made = _sh("ip", "netns", "add", probe, check=False)
    if made.returncode:
        return f"`ip netns add` failed here: {made.stderr.strip()[:200]}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


class Hosts:
    """A head (0 CPUs) and ``workers`` worker hosts of ``cpus`` CPUs each, on a private /24."""

    def __init__(self, root: Path, workers: int, cpus: int = 1, hidden: tuple[Path, ...] = ()):
        self.root, self.cpus, self.hidden = Path(root), cpus, tuple(Path(h) for h in hidden)
        self.tag = f"{os.getpid() % 1000}{random.randrange(100):02d}"
        net = random.randrange(16, 250)
        self.prefix = f"10.{random.randrange(200, 250)}.{net}"
        self.bridge, self.bridge_ip, self.head_ip = f"osbr{self.tag}", f"{self.prefix}.1", f"{self.prefix}.2"
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
                    # a killed host is declared dead within seconds (default: ~15 s), before a short study ends
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        self.env.pop("RAY_ADDRESS", None)
        self.port, self.dashboard_port = 6379 + random.randrange(1, 500), 8265 + random.randrange(1, 500)
        self.namespaces: list[str] = []
        self.worker_ips: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []
        self.head: subprocess.Popen | None = None
        self.head_ns = ""
        self.forward_rule = False
        self.logs = self.root / "hosts-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._bridge()
            self._start_head()
            for _ in range(workers):
                self.add_worker()
            self.wait_for(workers)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------ network
    def _bridge(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        if shutil.which("iptables"):  # bridged frames pass iptables' FORWARD chain, whose policy may be DROP
            _sh("iptables", "-I", "FORWARD", "1", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
            self.forward_rule = True

    def _namespace(self, name: str, ip: str) -> str:
        ns = f"osh{self.tag}{name}"
        host_end, ns_end = f"osv{self.tag}{name}", f"osp{self.tag}{name}"
        _sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _sh("ip", "link", "set", host_end, "master", self.bridge)
        _sh("ip", "link", "set", host_end, "up")
        _sh("ip", "link", "set", ns_end, "netns", ns)
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", ns_end)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        return ns

    def _start(self, ns: str, args: str, hide: tuple[Path, ...] = ()) -> subprocess.Popen:
        """`ray start --block ARGS` in ``ns``, with a private /tmp/ray and ``hide`` covered by empty tmpfs."""
        mounts = "".join(f"mount -t tmpfs tmpfs {h} && " for h in ("/tmp/ray", *hide))
        script = f"mkdir -p /tmp/ray && {mounts}exec ray start --block --disable-usage-stats --num-gpus=0 {args}"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=self.env, stdout=open(self.logs / f"{ns}.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------------------------------------------ Ray
    @property
    def gcs(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @property
    def jobs_url(self) -> str:
        return f"http://{self.head_ip}:{self.dashboard_port}"

    def _start_head(self) -> None:
        self.head_ns = self._namespace("h", self.head_ip)
        self.head = self._start(self.head_ns, f"--head --node-ip-address={self.head_ip} --port={self.port} "
                                f"--num-cpus=0 --include-dashboard=true --dashboard-host={self.head_ip} "
                                f"--dashboard-port={self.dashboard_port}")

    def add_worker(self) -> str:
        """A new worker host joins the cluster; returns its namespace."""
        k = len(self.worker_ips)
        ip = f"{self.prefix}.{10 + k}"
        ns = self._namespace(f"w{k}", ip)
        self.worker_ips[ns] = ip
        self._start(ns, f"--address={self.gcs} --node-ip-address={ip} --num-cpus={self.cpus}", self.hidden)
        return ns

    def nodes(self) -> list[dict]:
        """Alive nodes, as the head's dashboard (State API) lists them to a user on this machine."""
        out = subprocess.run(["ray", "list", "nodes", "--format", "json", "--address", self.jobs_url,
                              "--filter", "state=ALIVE"], env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"cannot list the cluster's nodes: {out.stderr.strip()[-500:]}")
        try:
            return json.loads(out.stdout[out.stdout.index("["):])
        except ValueError:
            raise RuntimeError(f"cannot read the cluster's nodes from: {out.stdout[-500:]}") from None

    def wait_for(self, workers: int, timeout: float = 180) -> None:
        """Until ``workers`` worker hosts are alive and the Jobs API answers."""
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"the head exited:\n{self.log(self.head_ns)}")
            try:
                alive = [n for n in self.nodes() if n["resources_total"].get("CPU", 0) > 0]
                if len(alive) >= workers:
                    return
                last = f"{len(alive)} worker host(s) alive"
            except RuntimeError as err:
                last = str(err)
            time.sleep(2)
        raise RuntimeError(f"cluster not up in {timeout:.0f} s ({last}):\n{self.log(self.head_ns)}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # ------------------------------------------------------------------------------------------------ faults
    def kill(self, ns: str) -> None:
        """The host dies: every process in its network namespace gets SIGKILL."""
        pids = _sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for ns in self.namespaces:
            self.kill(ns)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces:
            _sh("ip", "netns", "del", ns, check=False)
        if self.forward_rule:
            _sh("iptables", "-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT", check=False)
        _sh("ip", "link", "del", self.bridge, check=False)
