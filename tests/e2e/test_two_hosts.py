"""End to end: netmaster, two simulated hosts on real OVS, containers via the CNI shim.

One deployment serves the module (building it takes seconds); every test
leaves it as it found it. The fixture removes namespaces and processes even
when a test fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from testbed import netns as ns
from testbed.ovs import missing_requirements
from testbed.topology import Container, Deployment

_missing = missing_requirements() or (
    None if shutil.which("iperf3") and shutil.which("ethtool") else "iperf3/ethtool"
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.skipif(_missing is not None, reason=f"needs {_missing}"),
]

TENANT = "e2e"


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with Deployment(prefix="e2e-") as built:
        built.start()
        built.netctl("tenant", "create", TENANT)
        built.netctl(
            "net", "create", "-t", TENANT, "-e", "vxlan", "-s", "10.11.0.0/24",
            "-g", "10.11.0.254", "vx",
        )  # fmt: skip
        built.netctl(
            "net", "create", "-t", TENANT, "-e", "vlan", "-p", "42",
            "-s", "10.12.0.0/24", "-g", "10.12.0.254", "vl",
        )  # fmt: skip
        h1, h2 = built.hosts
        for network in ("vx", "vl"):
            built.add_container(f"{network}a", h1, TENANT, network)
            built.add_container(f"{network}b", h2, TENANT, network)
        yield built


def by_name(deployment: Deployment, name: str) -> Container:
    return next(c for c in deployment.containers if c.name == name)


@pytest.mark.parametrize("network", ["vx", "vl"])
def test_ping_across_hosts(deployment, network):
    a, b = by_name(deployment, f"{network}a"), by_name(deployment, f"{network}b")
    assert a.host is not b.host
    assert deployment.ping(a, b, count=3)
    assert deployment.ping(b, a, count=3)


@pytest.mark.parametrize(
    ("source", "target"), [("vxa", "vla"), ("vxa", "vlb"), ("vlb", "vxb")]
)
def test_networks_are_isolated(deployment, source, target):
    a, b = by_name(deployment, source), by_name(deployment, target)
    assert not deployment.ping(a, b, count=2)


@pytest.mark.parametrize("network", ["vx", "vl"])
def test_tcp_transfer_across_hosts(deployment, network):
    server, client = (
        by_name(deployment, f"{network}a"),
        by_name(deployment, f"{network}b"),
    )
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", server.ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        proc = deployment.exec(
            client, "iperf3", "-c", server.ip, "-t", "2", "-J", timeout_s=30
        )
    finally:
        daemon.kill()
        daemon.wait(5)
    assert proc.returncode == 0, proc.stdout[-800:]
    received = json.loads(proc.stdout)["end"]["sum_received"]["bytes"]
    # Two seconds of TCP through the userspace datapath moves tens of MB; a stall
    # from a wrong MTU or checksum offload moves almost nothing.
    assert received > 5_000_000


@pytest.mark.parametrize(("network", "mtu"), [("vx", 1450), ("vl", 1500)])
def test_container_interface_is_set_up_for_the_datapath(deployment, network, mtu):
    container = by_name(deployment, f"{network}a")
    link = deployment.exec(container, "ip", "-j", "addr", "show", "eth0")
    (info,) = json.loads(link.stdout)
    assert info["mtu"] == mtu
    assert info["address"] == container.result["interfaces"][1]["mac"]
    assert [a["local"] for a in info["addr_info"] if a["family"] == "inet"] == [
        container.ip
    ]
    route = deployment.exec(container, "ip", "route", "show", "default")
    gateway = "10.11.0.254" if network == "vx" else "10.12.0.254"
    assert f"default via {gateway} dev eth0" in route.stdout
    features = deployment.exec(container, "ethtool", "-k", "eth0")
    assert re.search(r"^tx-checksumming: off", features.stdout, re.M)


def test_cni_result_is_cni_1_0(deployment):
    result = by_name(deployment, "vxa").result
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"][1]["sandbox"].startswith("/run/netns/")
    assert result["ips"] == [
        {
            "address": f"{result['ips'][0]['address']}",
            "interface": 1,
            "gateway": "10.11.0.254",
        }
    ]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.11.0.254"}]


def test_cni_add_again_returns_the_same_address(deployment):
    container = by_name(deployment, "vxa")
    again = deployment.cni("ADD", container)
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout)["ips"] == container.result["ips"]
    assert deployment.ping(container, by_name(deployment, "vxb"))


def test_cni_del_of_unknown_container_succeeds(deployment):
    ghost = Container("ghost", "e2e-ghost", deployment.hosts[0], "vx", TENANT)
    proc = deployment.cni("DEL", ghost)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout == ""


def test_cni_add_to_missing_network_is_a_cni_error(deployment):
    name = "lost"
    netns = deployment._add_netns(f"e2e-{name}")
    lost = Container(name, netns, deployment.hosts[0], "nosuchnet", TENANT)
    proc = deployment.cni("ADD", lost)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 7 and "nosuchnet" in error["details"]
    # Nothing was allocated for it.
    endpoints = json.loads(deployment.netctl("--json", "endpoint", "ls").stdout)
    assert not any(e["containerID"] == name for e in endpoints)


def test_failed_add_midway_leaks_no_address(deployment):
    # netmaster allocates, then the agent cannot build the interface (the
    # namespace already has an eth0): Contiv kept such addresses allocated for
    # good; the failed ADD must give it back and say why in the ledger.
    netns = deployment._add_netns("e2e-busy")
    ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "eth0p"], netns=netns)
    busy = Container("busy", netns, deployment.hosts[0], "vx", TENANT)
    proc = deployment.cni("ADD", busy)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] >= 100 and "eth0" in error["details"]
    endpoints = json.loads(deployment.netctl("--json", "endpoint", "ls").stdout)
    assert not any(e["containerID"] == "busy" for e in endpoints)
    ledger = json.loads(
        deployment.netctl("--json", "ipam", "ledger", "-t", TENANT, "vx").stdout
    )
    reasons = [e["reason"] for e in ledger if e["endpointID"] == "busy:eth0"]
    assert reasons == ["cni add", "cni add failed"]


def test_add_into_a_missing_namespace_allocates_nothing(deployment):
    ghost = Container("ghost2", "e2e-no-such-netns", deployment.hosts[0], "vx", TENANT)
    proc = deployment.cni("ADD", ghost)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 3 and "CNI_NETNS" in error["msg"] + error["details"]
    ledger = json.loads(
        deployment.netctl("--json", "ipam", "ledger", "-t", TENANT, "vx").stdout
    )
    assert not any(e["endpointID"] == "ghost2:eth0" for e in ledger)


def test_check_notices_a_broken_container_interface(deployment):
    extra = deployment.add_container("chk", deployment.hosts[0], TENANT, "vx")
    try:
        assert deployment.cni("CHECK", extra).returncode == 0
        deployment.exec(extra, "ip", "addr", "flush", "dev", "eth0")
        broken = deployment.cni("CHECK", extra)
        assert broken.returncode != 0
        assert "address" in json.loads(broken.stdout)["details"]
        deployment.exec(extra, "ip", "link", "del", "eth0")
        gone = deployment.cni("CHECK", extra)
        assert gone.returncode != 0 and "eth0" in json.loads(gone.stdout)["details"]
    finally:
        assert deployment.cni("DEL", extra).returncode == 0
        deployment.containers.remove(extra)


def test_second_network_keeps_the_first_default_route(deployment):
    first = deployment.add_container("two", deployment.hosts[0], TENANT, "vx")
    second = Container("two", first.netns, first.host, "vl", TENANT, ifname="eth1")
    try:
        proc = deployment.cni("ADD", second)
        assert proc.returncode == 0, proc.stdout
        assert json.loads(proc.stdout)["routes"] == []
        route = deployment.exec(first, "ip", "route", "show", "default")
        assert "default via 10.11.0.254 dev eth0" in route.stdout
        assert deployment.ping(first, by_name(deployment, "vxb"))
    finally:
        assert deployment.cni("DEL", second).returncode == 0
        assert deployment.cni("DEL", first).returncode == 0
        deployment.containers.remove(first)


def test_add_with_a_path_that_is_no_namespace_is_refused(deployment):
    fake = Container("notns", "../../etc", deployment.hosts[0], "vx", TENANT)
    proc = deployment.cni("ADD", fake)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 4 and "CNI_NETNS" in error["msg"] + error["details"]


def test_container_delete_and_readd_frees_and_reuses_its_address(deployment):
    h2 = deployment.hosts[1]
    extra = deployment.add_container("vxc", h2, TENANT, "vx")
    address = extra.ip
    assert deployment.ping(by_name(deployment, "vxa"), extra)
    assert deployment.cni("DEL", extra).returncode == 0
    deployment.containers.remove(extra)
    endpoints = json.loads(deployment.netctl("--json", "endpoint", "ls").stdout)
    assert address not in [e["ipAddress"] for e in endpoints]
    again = deployment.add_container("vxd", h2, TENANT, "vx")
    assert again.ip == address
    assert deployment.ping(by_name(deployment, "vxa"), again)
    assert deployment.cni("DEL", again).returncode == 0
    deployment.containers.remove(again)


def test_agents_resync_after_netmaster_restarts(deployment):
    a = by_name(deployment, "vxa")
    deployment.restart_netmaster()
    # Created after the restart: h1's agent can only learn it from its new stream.
    late = deployment.add_container("vxlate", deployment.hosts[1], TENANT, "vx")
    try:
        deadline = time.monotonic() + 20
        while not deployment.ping(a, late, count=1):
            assert time.monotonic() < deadline, "h1 never learned the new endpoint"
        assert deployment.ping(late, a)
    finally:
        assert deployment.cni("DEL", late).returncode == 0
        deployment.containers.remove(late)


def test_agent_restart_keeps_traffic_flowing(deployment):
    a, b = by_name(deployment, "vxa"), by_name(deployment, "vxb")
    host = a.host
    rounds_before = _flow_rounds(deployment, host)
    pinger = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            a.netns,
            "ping",
            "-c",
            "60",
            "-i",
            "0.05",
            "-W",
            "1",
            b.ip,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    deployment.restart_agent(host)
    out, _ = pinger.communicate(timeout=30)
    received = int(re.search(r"(\d+) received", out).group(1))
    assert received == 60, out
    rounds_after = _flow_rounds(deployment, host)
    assert len(rounds_before) == len(rounds_after) == 1
    assert rounds_after != rounds_before
    assert deployment.ping(a, b)


def _flow_rounds(deployment: Deployment, host) -> set[int]:
    # The purge after a restart runs right after the snapshot; allow it a moment.
    for _ in range(50):
        dump = host.ovs.ofctl("dump-flows", "netplugin")
        rounds = {int(c, 16) >> 48 for c in re.findall(r"cookie=0x([0-9a-f]+)", dump)}
        if len(rounds) == 1:
            return rounds
        time.sleep(0.1)
    return rounds
