"""The test bed itself: namespaces, veth pairs and a sandboxed OVS instance."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.errors import ValidationError
from testbed import netns as nsutil
from testbed.ovs import MAX_WORKDIR_LEN, OVSInstance, make_workdir, missing_requirements

_MISSING = missing_requirements()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_root,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def netns() -> Iterator[str]:
    name = _name("tbt")
    with nsutil.netns_scope(name):
        yield name


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_workdir("tbt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ovs_instance_life_cycle(netns: str, workdir: Path) -> None:
    ovs = OVSInstance(workdir, netns=netns)
    with ovs:
        ovsdb_pid, vswitchd_pid = ovs.ovsdb_pid, ovs.vswitchd_pid
        assert ovsdb_pid is not None and vswitchd_pid is not None
        assert ovs.db_endpoint == f"unix:{workdir}/db.sock"

        mgmt = ovs.add_bridge("br-tb")
        assert mgmt == workdir / "br-tb.mgmt"
        assert mgmt.is_socket()
        assert ovs.bridges() == ["br-tb"]
        assert ovs.vsctl("get", "bridge", "br-tb", "datapath_type").strip() == "netdev"
        assert "OFPST_FLOW reply (OF1.3)" in ovs.ofctl("dump-flows", "br-tb")
        assert "ovs-vswitchd" in ovs.appctl("version")

        # vswitchd lives in the namespace: the bridge's tap device is there.
        assert nsutil.link_exists("br-tb", netns=netns)
        assert not nsutil.link_exists("br-tb")

    # stop() deleted the bridge before stopping the daemons: no tap device left.
    assert not nsutil.link_exists("br-tb", netns=netns)
    assert ovs.ovsdb_pid is None and ovs.vswitchd_pid is None
    for pid in (ovsdb_pid, vswitchd_pid):
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)

    ovs.stop()  # idempotent

    nsutil.del_netns(netns)
    assert not nsutil.netns_exists(netns)
    nsutil.del_netns(netns)  # idempotent


def test_ovs_instance_restarts_on_its_database(netns: str, workdir: Path) -> None:
    with OVSInstance(workdir, netns=netns) as ovs:
        ovs.vsctl("set", "Open_vSwitch", ".", "external_ids:tb=kept")
        ovs.add_bridge("br-gone")
    # stop() deleted the bridge; the rest of the database is reused on start().
    with OVSInstance(workdir, netns=netns) as ovs:
        kept = ovs.vsctl("get", "Open_vSwitch", ".", "external_ids:tb")
        assert kept.strip().strip('"') == "kept"
        assert ovs.bridges() == []


def test_long_workdir_is_refused() -> None:
    long_dir = Path("/tmp") / ("x" * MAX_WORKDIR_LEN)
    with pytest.raises(ValidationError, match="make_workdir"):
        OVSInstance(long_dir)


def test_veth_pair_between_namespaces(netns: str) -> None:
    with nsutil.netns_scope(_name("tbt")) as other:
        nsutil.add_veth(
            nsutil.VethEnd("vtb-a", netns, "198.18.7.1/24"),
            nsutil.VethEnd("vtb-b", other, "198.18.7.2/24"),
            mtu=1400,
        )
        out = nsutil.exec_in(netns, ["ip", "-o", "addr", "show", "dev", "vtb-a"])
        assert "198.18.7.1/24" in out.stdout
        link = nsutil.run(["ip", "-o", "link", "show", "vtb-b"], netns=other).stdout
        assert "mtu 1400" in link and "UP" in link
        nsutil.exec_in(netns, ["ping", "-c", "1", "-W", "2", "198.18.7.2"])

        nsutil.del_link("vtb-a", netns=netns)
        assert not nsutil.link_exists("vtb-b", netns=other)
        nsutil.del_link("vtb-a", netns=netns)  # idempotent


def test_addresses_outside_the_testbed_range_are_refused(netns: str) -> None:
    with pytest.raises(ValidationError, match="198.18.0.0/15"):
        nsutil.add_veth(
            nsutil.VethEnd("vtb-a", netns, "10.0.0.1/24"), nsutil.VethEnd("vtb-b")
        )


def test_failed_command_carries_stderr(netns: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        nsutil.run(["ip", "link", "show", "dev", "no-such-if"], netns=netns)
    assert "no-such-if" in info.value.stderr
    assert any("stderr:" in note for note in info.value.__notes__)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"
