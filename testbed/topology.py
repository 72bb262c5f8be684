"""A whole simulated deployment on one machine: netmaster, two hosts, containers.

    ns <p>ctl: netmaster (embedded store) on 0.0.0.0:9999
        ├── m1 198.19.0.1/30 ─── mgmt 198.19.0.2/30 ── ns <p>h1
        └── m2 198.19.0.5/30 ─── mgmt 198.19.0.6/30 ── ns <p>h2
    ns <p>h1: ovsdb-server + ovs-vswitchd (userspace) + netplugin agent
        eth0 198.18.0.1/24 ═══ underlay (VXLAN) ═══ eth0 198.18.0.2/24  ns <p>h2
        eth1 ══════════════ VLAN trunk, no address ═══════════ eth1     ns <p>h2
    containers: ns <p>c<N>, attached by executing the CNI shim in their host's ns

Everything lives in namespaces this module creates and in one work directory;
``Deployment.cleanup`` removes all of it, in reverse order, even after failures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from testbed import netns as ns
from testbed.ovs import OVSInstance, make_workdir

log = logging.getLogger(__name__)

NETMASTER_PORT = 9999
READY_TIMEOUT_S = 30.0
PROCESS_STOP_TIMEOUT_S = 10.0


@dataclass
class SimHost:
    name: str
    netns: str
    workdir: Path
    vtep_ip: str
    netmaster_url: str
    ovs: OVSInstance
    agent: subprocess.Popen[bytes] | None = None

    @property
    def cni_socket(self) -> Path:
        return self.workdir / "cni.sock"

    @property
    def agent_log(self) -> Path:
        return self.workdir / "agent.log"


@dataclass
class Container:
    name: str
    netns: str
    host: SimHost
    network: str
    tenant: str
    ifname: str = "eth0"
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return str(self.result["ips"][0]["address"]).split("/")[0]


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(PROCESS_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(PROCESS_STOP_TIMEOUT_S)


def _wait_for(
    predicate: Any, what: str, timeout_s: float, logfile: Path | None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tail = logfile.read_text()[-3000:] if logfile and logfile.exists() else ""
            raise TimeoutError(f"{what} not ready after {timeout_s}s\n{tail}")
        time.sleep(0.1)


def _cni_shim() -> list[str]:
    script = Path(sys.executable).parent / "netplugin-cni"
    return (
        [str(script)] if script.exists() else [sys.executable, "-m", "cniserver.shim"]
    )


class Deployment:
    """Build with ``start()``; always call ``cleanup()`` (or use ``with``)."""

    def __init__(self, prefix: str = "npl-", underlay_mtu: int = 1500) -> None:
        self.prefix = prefix
        self.underlay_mtu = underlay_mtu
        self.workdir = make_workdir(prefix)
        self.ctl_netns = f"{prefix}ctl"
        self.hosts: list[SimHost] = []
        self.containers: list[Container] = []
        self.netmaster: subprocess.Popen[bytes] | None = None
        self._namespaces: list[str] = []

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- building ---------------------------------------------------------------

    def _add_netns(self, name: str) -> str:
        ns.add_netns(name)
        self._namespaces.append(name)
        ns.run(["ip", "link", "set", "lo", "up"], netns=name)
        return name

    def start(self) -> None:
        self._add_netns(self.ctl_netns)
        for index in (1, 2):
            name = f"h{index}"
            host_ns = self._add_netns(f"{self.prefix}{name}")
            ns.add_veth(
                ns.VethEnd(f"m{index}", self.ctl_netns, f"198.19.0.{4 * index - 3}/30"),
                ns.VethEnd("mgmt", host_ns, f"198.19.0.{4 * index - 2}/30"),
            )
            workdir = self.workdir / name
            workdir.mkdir()
            self.hosts.append(
                SimHost(
                    name=name,
                    netns=host_ns,
                    workdir=workdir,
                    vtep_ip=f"198.18.0.{index}",
                    netmaster_url=f"http://198.19.0.{4 * index - 3}:{NETMASTER_PORT}",
                    ovs=OVSInstance(workdir, host_ns),
                )
            )
        h1, h2 = self.hosts
        ns.add_veth(
            ns.VethEnd("eth0", h1.netns, "198.18.0.1/24"),
            ns.VethEnd("eth0", h2.netns, "198.18.0.2/24"),
            mtu=self.underlay_mtu,
        )
        ns.add_veth(
            ns.VethEnd("eth1", h1.netns),
            ns.VethEnd("eth1", h2.netns),
            mtu=self.underlay_mtu,
        )
        for host in self.hosts:
            # Userspace datapath: the kernel must not checksum-offload what OVS reads.
            for nic in ("eth0", "eth1"):
                ns.run(["ethtool", "-K", nic, "tx", "off"], netns=host.netns)
            host.ovs.start()
        self._start_netmaster()
        for host in self.hosts:
            self._start_agent(host)
        for host in self.hosts:
            _wait_for(
                lambda h=host: h.cni_socket.exists() or self._died(h.agent),
                f"agent {host.name}",
                READY_TIMEOUT_S,
                host.agent_log,
            )
            if self._died(host.agent):
                raise RuntimeError(
                    f"agent {host.name} exited:\n{host.agent_log.read_text()[-3000:]}"
                )

    @staticmethod
    def _died(process: subprocess.Popen[bytes] | None) -> bool:
        return process is None or process.poll() is not None

    def _start_netmaster(self) -> None:
        logfile = self.workdir / "netmaster.log"
        with logfile.open("ab") as output:
            self.netmaster = self._spawn_netmaster(output)
        _wait_for(
            lambda: (
                self.netctl("tenant", "ls", check=False).returncode == 0
                or self._died(self.netmaster)
            ),
            "netmaster",
            READY_TIMEOUT_S,
            logfile,
        )

    def _spawn_netmaster(self, output: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "ip", "netns", "exec", self.ctl_netns,
                sys.executable, "-m", "netmaster.cli",
                "--listen", f"0.0.0.0:{NETMASTER_PORT}",
                "--store", f"embedded://{self.workdir}/netmaster.db",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def agent_command(self, host: SimHost) -> list[str]:
        return [
            "ip", "netns", "exec", host.netns,
            sys.executable, "-m", "netplugin.cli",
            "--host", host.name,
            "--netmaster", host.netmaster_url,
            "--ovsdb", host.ovs.db_endpoint,
            "--ovs-rundir", str(host.ovs.rundir),
            "--vtep-ip", host.vtep_ip,
            "--underlay-if", "eth0",
            "--vlan-uplink", "eth1",
            "--underlay-mtu", str(self.underlay_mtu),
            "--cni-socket", str(host.cni_socket),
        ]  # fmt: skip

    def _start_agent(self, host: SimHost) -> None:
        with host.agent_log.open("ab") as logfile:
            host.agent = subprocess.Popen(
                self.agent_command(host), stdout=logfile, stderr=subprocess.STDOUT
            )

    def restart_netmaster(self) -> None:
        """Stop netmaster and start it again on the same store file."""
        _stop_process(self.netmaster)
        self._start_netmaster()

    def restart_agent(self, host: SimHost) -> None:
        _stop_process(host.agent)
        host.cni_socket.unlink(missing_ok=True)
        self._start_agent(host)
        _wait_for(
            host.cni_socket.exists,
            f"agent {host.name}",
            READY_TIMEOUT_S,
            host.agent_log,
        )

    # -- using ----------------------------------------------------------------

    def netctl(
        self, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return ns.run(
            [
                sys.executable, "-m", "netctl.cli",
                "--netmaster", f"http://127.0.0.1:{NETMASTER_PORT}", *args,
            ],
            netns=self.ctl_netns,
            check=check,
        )  # fmt: skip

    def cni(
        self, command: str, container: Container, config: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Execute the CNI shim as a runtime does: environment plus config on stdin."""
        netconf = config or {
            "cniVersion": "1.0.0",
            "name": container.network,
            "type": "netplugin-cni",
            "tenant": container.tenant,
            "network": container.network,
            "cniSocket": str(container.host.cni_socket),
        }
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container.name,
            "CNI_NETNS": f"/run/netns/{container.netns}",
            "CNI_IFNAME": container.ifname,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={container.name}",
            "CNI_PATH": str(Path(sys.executable).parent),
        }
        return subprocess.run(
            ["ip", "netns", "exec", container.host.netns, *_cni_shim()],
            input=json.dumps(netconf),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def add_container(
        self, name: str, host: SimHost, tenant: str, network: str
    ) -> Container:
        container = Container(
            name, self._add_netns(f"{self.prefix}{name}"), host, network, tenant
        )
        proc = self.cni("ADD", container)
        if proc.returncode != 0:
            raise RuntimeError(f"CNI ADD {name} failed: {proc.stdout} {proc.stderr}")
        container.result = json.loads(proc.stdout)
        self.containers.append(container)
        return container

    def exec(
        self, container: Container, *cmd: str, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return ns.run(
            list(cmd), netns=container.netns, check=False, timeout_s=timeout_s
        )

    def ping(self, source: Container, target: Container, count: int = 2) -> bool:
        proc = self.exec(
            source, "ping", "-c", str(count), "-i", "0.2", "-W", "1", target.ip
        )
        return proc.returncode == 0

    # -- tearing down ------------------------------------------------------------

    def save_state(self) -> Path:
        """Write what ``teardown_saved`` needs to remove a kept deployment later."""
        state = {
            "namespaces": self._namespaces,
            "pids": [
                p.pid for p in (self.netmaster, *(h.agent for h in self.hosts)) if p
            ],
            "hosts": [
                {"workdir": str(h.workdir), "netns": h.netns} for h in self.hosts
            ],
        }
        path = self.workdir / "state.json"
        path.write_text(json.dumps(state))
        return path

    @staticmethod
    def teardown_saved(state_file: Path) -> None:
        """Remove a deployment left running by ``--keep``, from its state file."""
        state = json.loads(state_file.read_text())
        for pid in state["pids"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for host in state["hosts"]:
            OVSInstance(Path(host["workdir"]), host["netns"]).stop()
        for name in reversed(state["namespaces"]):
            ns.del_netns(name)
        shutil.rmtree(state_file.parent, ignore_errors=True)

    @property
    def logs_dir(self) -> Path:
        """Where cleanup leaves the processes' logs of the last run, for diagnosis."""
        return Path(f"/tmp/{self.prefix}logs")

    def _save_logs(self) -> None:
        shutil.rmtree(self.logs_dir, ignore_errors=True)
        self.logs_dir.mkdir(parents=True)
        for logfile in self.workdir.rglob("*.log"):
            relative = logfile.relative_to(self.workdir)
            shutil.copy(logfile, self.logs_dir / str(relative).replace("/", "-"))

    def cleanup(self) -> None:
        errors: list[str] = []
        for container in reversed(self.containers):
            if self._died(container.host.agent):
                continue
            proc = self.cni("DEL", container)
            if proc.returncode != 0:
                errors.append(f"CNI DEL {container.name}: {proc.stdout}")
        self.containers.clear()
        for host in self.hosts:
            _stop_process(host.agent)
        _stop_process(self.netmaster)
        for host in self.hosts:
            try:
                host.ovs.stop()
            except Exception as exc:  # keep tearing down; reported below
                errors.append(f"stop ovs {host.name}: {exc}")
        for name in reversed(self._namespaces):
            ns.del_netns(name)
        self._namespaces.clear()
        self._save_logs()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            log.warning("cleanup finished with errors errors=%s", errors)
