"""One private Open vSwitch instance (ovsdb-server + ovs-vswitchd) per simulated host.

This module owns the life cycle of a sandboxed OVS: its database, its two daemons,
their sockets, pidfiles and logs, all inside one work directory. ovs-vswitchd runs
inside the host's network namespace with `OVS_RUNDIR` pointing at the work
directory, so bridge management sockets appear at `<workdir>/<bridge>.mgmt` and
nothing touches `/var/run/openvswitch` or a system OVS. There is no OVS kernel
module here: bridges must use the userspace datapath (`datapath_type=netdev`).

Socket path length: a unix socket path is at most 107 bytes (108 with the NUL).
The longest path this module needs is `<workdir>/<15-byte bridge>.mgmt`, so the
work directory must be at most `MAX_WORKDIR_LEN` (86) bytes; the constructor
refuses longer ones. pytest's `tmp_path` is `<basetemp>/<test name cut at 30>N`,
about 61 bytes under the default `/tmp/pytest-of-root/pytest-N`, so it fits by a
small margin only: a longer TMPDIR, user name or `--basetemp`, or a fixture that
nests directories, breaks it. Prefer `make_workdir()` (`/tmp/ovs-XXXXXXXX`, 17
bytes) and delete it afterwards (`ovs_host` does both).

Synchronous on purpose (fixtures and the demo script call it); asyncio code must
wrap calls in `asyncio.to_thread`. Failed commands raise
`subprocess.CalledProcessError` with stderr attached (see `testbed.netns.run`).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from api.errors import ValidationError
from testbed import netns as nsutil

log = logging.getLogger(__name__)

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")

#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
UNIX_PATH_MAX = 107

#: Longest socket name this module puts in the work directory: "/" + 15-byte bridge
#: name + ".mgmt" (the daemons' ".ctl" names are shorter).
_LONGEST_SOCKET_NAME = 1 + nsutil.IFNAME_MAX + len(".mgmt")

#: Longest work directory path (bytes) for which every socket path fits.
MAX_WORKDIR_LEN = UNIX_PATH_MAX - _LONGEST_SOCKET_NAME

#: Bound on each daemon's exit after SIGTERM, then again after SIGKILL.
STOP_TIMEOUT_S = 5.0

#: Bound on one ovs-vsctl call, passed to it as --timeout (it waits for vswitchd).
VSCTL_TIMEOUT_S = 10

_BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl")


def missing_requirements(vswitchd: bool = True) -> str | None:
    """Why an OVS instance cannot run here (a skip reason), or None when it can.

    With ``vswitchd=False`` only ovsdb-server is wanted, which needs no root.
    """
    if vswitchd and os.geteuid() != 0:
        return "needs root (network namespaces, ovs-vswitchd)"
    wanted = (
        (*_BINARIES, "ovs-appctl", "ip") if vswitchd else _BINARIES[:2] + ("ovs-vsctl",)
    )
    missing = [b for b in wanted if shutil.which(b) is None]
    if missing:
        return f"missing binaries: {', '.join(missing)} (Debian openvswitch-switch)"
    if not SCHEMA.exists():
        return f"missing OVS schema {SCHEMA}"
    return None


def make_workdir(prefix: str = "ovs-") -> Path:
    """A fresh, short work directory under /tmp (fits unix socket limits)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class OVSInstance:
    """ovsdb-server and ovs-vswitchd sandboxed in `workdir`, vswitchd in `netns`.

    `start()` creates the database (if missing) and starts both daemons; `stop()`
    deletes every bridge (the userspace datapath leaves tap devices behind
    otherwise), then stops both daemons by the pids in their pidfiles and waits for
    them to exit. Both are idempotent; the instance is also a context manager. The
    caller owns the namespace and the work directory.
    """

    def __init__(self, workdir: Path, netns: str | None = None) -> None:
        workdir = Path(workdir).absolute()
        if len(str(workdir).encode()) > MAX_WORKDIR_LEN:
            raise ValidationError(
                "workdir",
                str(workdir),
                f"a path of at most {MAX_WORKDIR_LEN} bytes so unix sockets fit "
                "(use testbed.ovs.make_workdir())",
            )
        self.workdir = workdir
        self.netns = netns

    # -- paths ---------------------------------------------------------------

    @property
    def rundir(self) -> Path:
        """OVS_RUNDIR of this instance: where bridge sockets appear."""
        return self.workdir

    @property
    def db_path(self) -> Path:
        return self.workdir / "conf.db"

    @property
    def db_socket(self) -> Path:
        return self.workdir / "db.sock"

    @property
    def db_endpoint(self) -> str:
        """OVSDB endpoint for clients, "unix:<workdir>/db.sock"."""
        return f"unix:{self.db_socket}"

    @property
    def vswitchd_ctl(self) -> Path:
        return self.workdir / "ovs-vswitchd.ctl"

    @property
    def ovsdb_ctl(self) -> Path:
        return self.workdir / "ovsdb-server.ctl"

    def mgmt_socket(self, bridge: str) -> Path:
        """The bridge's OpenFlow management socket, <workdir>/<bridge>.mgmt."""
        nsutil.check_ifname(bridge)
        return self.workdir / f"{bridge}.mgmt"

    def mgmt_endpoint(self, bridge: str) -> str:
        """OpenFlow endpoint of the bridge, "unix:<workdir>/<bridge>.mgmt"."""
        return f"unix:{self.mgmt_socket(bridge)}"

    def _pidfile(self, daemon: str) -> Path:
        return self.workdir / f"{daemon}.pid"

    @property
    def ovsdb_pid(self) -> int | None:
        """Pid of the running ovsdb-server, None when it is not running."""
        return _live_pid(self._pidfile("ovsdb-server"), "ovsdb-server")

    @property
    def vswitchd_pid(self) -> int | None:
        """Pid of the running ovs-vswitchd, None when it is not running."""
        return _live_pid(self._pidfile("ovs-vswitchd"), "ovs-vswitchd")

    # -- life cycle ----------------------------------------------------------

    def start(self, vswitchd: bool = True) -> None:
        """Create the database if missing, start ovsdb-server, init, start vswitchd.

        ``vswitchd=False`` starts the database alone (no root needed). On
        failure whatever was started is stopped again before the error is raised.
        """
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        try:
            if not self.db_path.exists():
                nsutil.run(["ovsdb-tool", "create", str(self.db_path), str(SCHEMA)])
            if self.ovsdb_pid is None:
                self._start_ovsdb()
            self.vsctl("--no-wait", "init")
            if vswitchd and self.vswitchd_pid is None:
                self._start_vswitchd()
        except BaseException:
            try:
                self.stop()
            except Exception:
                log.exception("ovs cleanup after failed start failed workdir=%s", w)
            raise
        log.info(
            "ovs started workdir=%s netns=%s ovsdb_pid=%s vswitchd_pid=%s",
            self.workdir,
            self.netns,
            self.ovsdb_pid,
            self.vswitchd_pid,
        )

    def _start_ovsdb(self) -> None:
        w = self.workdir
        nsutil.run(
            [
                "ovsdb-server",
                str(self.db_path),
                f"--remote=punix:{self.db_socket}",
                f"--pidfile={w / 'ovsdb-server.pid'}",
                f"--log-file={w / 'ovsdb-server.log'}",
                f"--unixctl={self.ovsdb_ctl}",
                "--detach",
            ],
            env=self._env(),
        )

    def _start_vswitchd(self) -> None:
        w = self.workdir
        # --detach returns once vswitchd has initialised and written its pidfile.
        nsutil.run(
            [
                "ovs-vswitchd",
                self.db_endpoint,
                f"--pidfile={w / 'ovs-vswitchd.pid'}",
                f"--log-file={w / 'ovs-vswitchd.log'}",
                f"--unixctl={self.vswitchd_ctl}",
                "--detach",
            ],
            netns=self.netns,
            env=self._env(),
        )

    def stop(self) -> None:
        """Delete every bridge, stop both daemons and wait for them; idempotent."""
        errors: list[Exception] = []
        if self.vswitchd_pid is not None and self.ovsdb_pid is not None:
            try:
                for bridge in self.bridges():
                    # Waits for vswitchd to apply it, so the tap devices are gone.
                    self.vsctl("--if-exists", "del-br", bridge)
            except Exception as exc:  # keep stopping the daemons; raised below
                errors.append(exc)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            try:
                _stop_daemon(self._pidfile(daemon), daemon)
            except Exception as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"stopping ovs in {self.workdir} failed", errors)
        log.info("ovs stopped workdir=%s", self.workdir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- commands ------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # Keeps every OVS tool away from the system's /var/run/openvswitch.
        return {
            "OVS_RUNDIR": str(self.workdir),
            "OVS_DBDIR": str(self.workdir),
            "OVS_LOGDIR": str(self.workdir),
        }

    def vsctl(self, *args: str) -> str:
        """Run `ovs-vsctl` against this instance's database; return stdout."""
        cmd = [
            "ovs-vsctl",
            f"--db={self.db_endpoint}",
            f"--timeout={VSCTL_TIMEOUT_S}",
            *args,
        ]
        return nsutil.run(cmd, env=self._env(), timeout_s=VSCTL_TIMEOUT_S + 5).stdout

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """Run `ovs-ofctl -O OpenFlow13 <command> unix:<mgmt> <args>`; return stdout.

        Example: `ofctl("dump-flows", "br0", "table=0")`.
        """
        cmd = [
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            command,
            self.mgmt_endpoint(bridge),
            *args,
        ]
        return nsutil.run(cmd, env=self._env()).stdout

    def appctl(self, *args: str) -> str:
        """Run `ovs-appctl` against ovs-vswitchd's unixctl socket; return stdout."""
        cmd = ["ovs-appctl", "-t", str(self.vswitchd_ctl), *args]
        return nsutil.run(cmd, env=self._env()).stdout

    def run_in_netns(self, *cmd: str) -> str:
        """Run a command in vswitchd's namespace (e.g. `ip link`); return stdout."""
        return nsutil.run(list(cmd), netns=self.netns).stdout

    # -- bridges -------------------------------------------------------------

    def bridges(self) -> list[str]:
        """Names of the bridges in the database."""
        return self.vsctl("list-br").split()

    def add_bridge(
        self,
        name: str,
        protocols: str = "OpenFlow13",
        fail_mode: str = "secure",
        wait_s: float = 5.0,
    ) -> Path:
        """Add a userspace (netdev) bridge and wait for its management socket.

        `protocols` is the bridge's protocols column ("OpenFlow13",
        "OpenFlow10,OpenFlow13", ...). `fail_mode=secure` keeps flows while no
        controller is connected. Returns the management socket path.
        """
        nsutil.check_ifname(name)
        self.vsctl(
            "--may-exist",
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
            f"protocols={protocols}",
            f"fail_mode={fail_mode}",
        )
        return self.wait_mgmt_socket(name, wait_s)

    def del_bridge(self, name: str) -> None:
        """Delete a bridge; a missing one is fine."""
        self.vsctl("--if-exists", "del-br", name)

    def wait_mgmt_socket(self, bridge: str, timeout_s: float = 5.0) -> Path:
        """Wait until the bridge's management socket exists; return its path."""
        path = self.mgmt_socket(bridge)
        deadline = time.monotonic() + timeout_s
        while not path.is_socket():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} did not appear within {timeout_s:.1f}s")
            time.sleep(0.02)
        return path


@contextmanager
def ovs_host(prefix: str = "tb") -> Iterator[OVSInstance]:
    """A fresh netns, a short work directory and a started OVSInstance in it.

    Everything is torn down on exit: bridges, daemons, namespace, work directory
    (the directory is kept if stopping failed, for its logs).
    """
    netns = f"{prefix}-{secrets.token_hex(4)}"
    workdir = make_workdir(prefix=f"{prefix}-")
    nsutil.add_netns(netns)
    ovs = OVSInstance(workdir, netns=netns)
    try:
        ovs.start()
        yield ovs
    finally:
        try:
            ovs.stop()
        finally:
            nsutil.del_netns(netns)
        shutil.rmtree(workdir, ignore_errors=True)


# -- daemons by pidfile --------------------------------------------------------


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _proc_state(pid: int) -> tuple[str, str] | None:
    """(comm, state letter) of a process, None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, so split on the
    # last ")".
    head, _, rest = stat.rpartition(")")
    comm = head.partition("(")[2]
    return comm, rest.split()[0]


def _live_pid(pidfile: Path, daemon: str) -> int | None:
    """The pid in `pidfile` if that process is alive and is `daemon`."""
    pid = _read_pid(pidfile)
    if pid is None:
        return None
    # A recycled pid belongs to some other program: never signal it. A zombie has
    # exited already (its reaper just has not collected it).
    if not _is_running(pid, daemon):
        return None
    return pid


def _is_running(pid: int, daemon: str) -> bool:
    state = _proc_state(pid)
    # /proc comm is cut at 15 bytes.
    return state is not None and state[1] != "Z" and state[0] == daemon[:15]


def _stop_daemon(pidfile: Path, daemon: str) -> None:
    pid = _live_pid(pidfile, daemon)
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _is_running(pid, daemon):
                log.info(
                    "daemon stopped name=%s pid=%d signal=%s", daemon, pid, sig.name
                )
                return
            time.sleep(0.02)
        log.warning(
            "daemon ignored signal name=%s pid=%d signal=%s", daemon, pid, sig.name
        )
    raise TimeoutError(f"{daemon} pid {pid} still running after SIGKILL")
