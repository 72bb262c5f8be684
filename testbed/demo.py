"""The demo: the main job end to end on real OVS, real namespaces, real packets.

netmaster + two simulated hosts (own OVS, userspace datapath, netplugin agent),
a tenant with one VXLAN and one VLAN network created through netctl, two
containers per host on each network attached by executing the CNI shim, then
pings between every pair, iperf3 TCP across hosts, and a one-line summary.

    python -m testbed.demo [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from testbed.topology import Container, Deployment

TENANT = "demo"
NETWORKS = {
    # name: (netctl flags)
    "vxnet": ["-e", "vxlan", "-s", "10.1.1.0/24", "-g", "10.1.1.254"],
    "vlnet": ["-e", "vlan", "-p", "100", "-s", "10.1.2.0/24", "-g", "10.1.2.254"],
}
IPERF_SECONDS = 3


def say(text: str) -> None:
    print(text, flush=True)


def build(deployment: Deployment) -> list[Container]:
    say("== netctl: tenant and networks")
    say(deployment.netctl("tenant", "create", TENANT).stdout.strip())
    for name, flags in NETWORKS.items():
        deployment.netctl("net", "create", "-t", TENANT, *flags, name)
    say(deployment.netctl("net", "ls", "-t", TENANT).stdout.rstrip())

    say("== CNI ADD: two containers per host on each network")
    containers = []
    for network in NETWORKS:
        for host in deployment.hosts:
            for n in (1, 2):
                name = f"{network[:2]}{host.name}c{n}"
                containers.append(deployment.add_container(name, host, TENANT, network))
    say(deployment.netctl("endpoint", "ls").stdout.rstrip())
    return containers


def connectivity(
    deployment: Deployment, containers: list[Container]
) -> tuple[int, int, int, int, list[str]]:
    say("== ping every pair")
    reachable = isolated = want_reach = want_isolated = 0
    failures = []
    for a, b in itertools.combinations(containers, 2):
        same = a.network == b.network
        ok = deployment.ping(a, b, count=2 if same else 1)
        verdict = "reachable" if ok else "isolated"
        expected = "reachable" if same else "isolated"
        mark = "ok" if verdict == expected else "UNEXPECTED"
        where = "same host" if a.host is b.host else "across hosts"
        say(
            f"  {a.name:9} {a.ip:10} -> {b.name:9} {b.ip:10} {where:12} {verdict:9} {mark}"
        )
        if same:
            want_reach += 1
            reachable += ok
        else:
            want_isolated += 1
            isolated += not ok
        if verdict != expected:
            failures.append(f"{a.name}->{b.name} {verdict}")
    return reachable, want_reach, isolated, want_isolated, failures


def iperf(deployment: Deployment, server: Container, client: Container) -> float:
    """Gbit/s of a short TCP transfer from ``client`` to ``server``."""
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", server.ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        proc = deployment.exec(
            client,
            "iperf3", "-c", server.ip, "-t", str(IPERF_SECONDS), "-J",
            timeout_s=IPERF_SECONDS + 20,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {proc.stdout[-500:]} {proc.stderr}")
        report = json.loads(proc.stdout)
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        daemon.kill()
        daemon.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--teardown", metavar="STATE_FILE", help="remove a deployment left by --keep"
    )
    args = parser.parse_args(argv)
    if args.teardown:
        Deployment.teardown_saved(Path(args.teardown))
        return 0

    deployment = Deployment()
    try:
        say("== starting netmaster and two hosts (OVS userspace datapath + agent)")
        deployment.start()
        containers = build(deployment)
        reachable, want_reach, isolated, want_isolated, failures = connectivity(
            deployment, containers
        )
        say("== iperf3 TCP across hosts")
        rates = {}
        for network in NETWORKS:
            on_net = [c for c in containers if c.network == network]
            server = next(c for c in on_net if c.host is deployment.hosts[0])
            client = next(c for c in on_net if c.host is deployment.hosts[1])
            rates[network] = iperf(deployment, server, client)
            say(
                f"  {network}: {client.name} -> {server.name} {rates[network]:.2f} Gbit/s"
            )
        ok = not failures
        if args.keep:
            state = deployment.save_state()
            say(
                f"kept running: netctl via `ip netns exec {deployment.ctl_netns} "
                f"{Path(sys.executable).parent / 'netctl'} ...`, logs in {deployment.workdir}; "
                f"remove it with "
                f"`cd {Path.cwd()} && {sys.executable} -m testbed.demo --teardown {state}`"
            )
        say(
            f"SUMMARY: {'PASS' if ok else 'FAIL'}: {reachable}/{want_reach} pairs "
            f"reachable, {isolated}/{want_isolated} pairs isolated as expected, TCP "
            + ", ".join(f"{n} {r:.2f} Gbit/s" for n, r in rates.items())
        )
        return 0 if ok else 1
    finally:
        if not args.keep:
            deployment.cleanup()


if __name__ == "__main__":
    sys.exit(main())
