"""Network namespaces and veth pairs for the test bed, driven through `ip`.

This module owns the simulated hosts' plumbing: creating and deleting named network
namespaces, running commands inside one, and wiring two namespaces together with a
veth pair. It is synchronous on purpose (pytest fixtures and the demo script call
it); asyncio code must go through `asyncio.to_thread`.

Deletes are idempotent: deleting a namespace or a link that is already gone is not
an error, so cleanup code can run unconditionally.

Addresses put on veths must come from 198.18.0.0/15 (RFC 2544 benchmarking range):
the test bed never configures anything that could collide with a real network.

Errors: a failed command raises `subprocess.CalledProcessError` with the command's
stderr kept on `.stderr` and attached as a note, so pytest shows it. This is test
infrastructure, outside the product error tree in `api.errors`; bad arguments raise
`api.errors.ValidationError`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from api.errors import ValidationError

log = logging.getLogger(__name__)

#: Every address the test bed configures lies inside this range (RFC 2544).
TESTBED_NET = ipaddress.ip_network("198.18.0.0/15")

#: Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
IFNAME_MAX = 15

#: Default bound on one `ip`/`ovs-*` command; none of them should take long.
DEFAULT_TIMEOUT_S = 30.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def run(
    cmd: Sequence[str],
    netns: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` (inside `netns` when given) and return the completed process.

    `env` holds extra variables added to this process's environment (PATH and the
    rest are kept). With `check`, a non-zero exit raises `CalledProcessError` whose
    note and `.stderr` carry the command's stderr. `subprocess.TimeoutExpired` is
    raised when the command runs longer than `timeout_s`.
    """
    argv = list(cmd)
    if netns is not None:
        _check_name("netns", netns)
        argv = ["ip", "netns", "exec", netns, *argv]
    full_env = None
    if env is not None:
        full_env = {**os.environ, **env}

    log.debug("run argv=%s", argv)
    proc = subprocess.run(
        argv,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and proc.returncode != 0:
        err = subprocess.CalledProcessError(
            proc.returncode, argv, output=proc.stdout, stderr=proc.stderr
        )
        err.add_note(f"stderr: {proc.stderr.strip() or '<empty>'}")
        raise err
    return proc


def list_netns() -> list[str]:
    """Names of the network namespaces `ip netns` knows."""
    out = run(["ip", "netns", "list"]).stdout
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_exists(name: str) -> bool:
    """Whether the named network namespace exists."""
    return name in list_netns()


def add_netns(name: str, exist_ok: bool = False) -> None:
    """Create the named network namespace and bring its loopback up."""
    _check_name("netns", name)
    if exist_ok and netns_exists(name):
        return
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "lo", "up"], netns=name)
    log.info("netns created name=%s", name)


def del_netns(name: str) -> None:
    """Delete the named network namespace; a missing one is fine.

    Interfaces inside it go with it (veth peers elsewhere too); processes still
    running in it keep it alive in the kernel, so stop them first.
    """
    _check_name("netns", name)
    if not netns_exists(name):
        return
    run(["ip", "netns", "del", name])
    log.info("netns deleted name=%s", name)


def exec_in(
    netns: str,
    cmd: Sequence[str],
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside `netns` (`ip netns exec`); see `run`."""
    return run(cmd, netns=netns, check=check, env=env, timeout_s=timeout_s)


@contextmanager
def netns_scope(name: str) -> Iterator[str]:
    """Create the namespace, yield its name, and always delete it afterwards."""
    add_netns(name)
    try:
        yield name
    finally:
        del_netns(name)


@dataclass(frozen=True, slots=True)
class VethEnd:
    """One end of a veth pair: its name, its namespace (None: this one), address."""

    name: str
    # Namespace holding this end; None is the namespace of the calling process.
    netns: str | None = None
    # Address with prefix length, e.g. "198.18.0.1/24"; None leaves it unaddressed.
    address: str | None = None


def add_veth(a: VethEnd, b: VethEnd, mtu: int = 1500) -> None:
    """Create a veth pair between `a` and `b`, set MTU and addresses, bring it up.

    Both ends are created directly in their namespaces (no window where a name
    could clash in the caller's namespace).
    """
    for end in (a, b):
        check_ifname(end.name)
        if end.netns is not None:
            _check_name("netns", end.netns)
        if end.address is not None:
            _check_address(end.address)
    if not 68 <= mtu <= 65535:
        raise ValidationError("mtu", mtu, "an integer in 68..65535")

    cmd = ["ip", "link", "add", a.name]
    if a.netns is not None:
        cmd += ["netns", a.netns]
    cmd += ["mtu", str(mtu), "type", "veth", "peer", "name", b.name]
    if b.netns is not None:
        cmd += ["netns", b.netns]
    cmd += ["mtu", str(mtu)]
    run(cmd)

    for end in (a, b):
        if end.address is not None:
            run(["ip", "addr", "add", end.address, "dev", end.name], netns=end.netns)
        run(["ip", "link", "set", end.name, "up"], netns=end.netns)
    log.info(
        "veth created a=%s a_netns=%s b=%s b_netns=%s mtu=%d",
        a.name,
        a.netns,
        b.name,
        b.netns,
        mtu,
    )


def link_exists(name: str, netns: str | None = None) -> bool:
    """Whether interface `name` exists (inside `netns` when given)."""
    check_ifname(name)
    proc = run(["ip", "link", "show", "dev", name], netns=netns, check=False)
    return proc.returncode == 0


def del_link(name: str, netns: str | None = None) -> None:
    """Delete interface `name`; a missing one is fine (deleting a veth end drops
    its peer too)."""
    if not link_exists(name, netns):
        return
    run(["ip", "link", "del", "dev", name], netns=netns)


def _check_name(field: str, name: str) -> None:
    # Names end up in argv and in /run/netns paths: refuse anything path-like.
    if not _NAME_RE.match(name) or len(name) > 64:
        raise ValidationError(field, name, "letters, digits, '_', '.', '-' (<= 64)")


def check_ifname(name: str) -> None:
    """Raise ValidationError unless `name` is a valid Linux interface name."""
    if not _NAME_RE.match(name) or len(name.encode()) > IFNAME_MAX:
        raise ValidationError(
            "ifname", name, f"letters, digits, '_', '.', '-' (<= {IFNAME_MAX} bytes)"
        )


def _check_address(address: str) -> None:
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ValidationError("address", address, "an address/prefix") from exc
    if iface.ip not in TESTBED_NET:
        raise ValidationError("address", address, f"an address inside {TESTBED_NET}")
