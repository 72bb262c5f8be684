"""netctl's policy-side commands against a real netmaster: Contiv's flags, output,
errors and exit codes (0 done, 1 refused or unreachable, 2 bad usage)."""

from __future__ import annotations

import asyncio
import json
import sys
import types

import pytest

from netctl import cli


async def netctl(url: str, *args: str) -> int:
    # main() runs its own event loop, so it gets a thread of its own here.
    return await asyncio.to_thread(cli.main, ["--netmaster", url, *args])


async def ok(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = await netctl(url, *args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    return [line.split() for line in lines[:1] + lines[2:]]


@pytest.fixture
async def blue(netmaster_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    await ok(netmaster_url, capsys, "tenant", "create", "blue")
    await ok(
        netmaster_url,
        capsys,
        "net",
        "create",
        "-t",
        "blue",
        "-s",
        "10.1.1.0/24",
        "-g",
        "10.1.1.254",
        "web",
    )
    return netmaster_url


async def test_policy_rules_group_and_profile(blue, capsys):
    url = blue
    await ok(url, capsys, "policy", "create", "-t", "blue", "web-in")
    await ok(url, capsys, "netprofile", "create", "-t", "blue", "-b", "10 Mbps", "-B", "64", "-d", "46", "gold")  # fmt: skip
    out = await ok(
        url, capsys, "group", "create", "-t", "blue", "-p", "web-in", "-n", "gold",
        "--ip-pool", "10.1.1.10-10.1.1.50", "web", "app",
    )  # fmt: skip
    assert table(out)[1] == [
        "blue", "app", "web", "1", "web-in", "gold", "10.1.1.10-10.1.1.50",
    ]  # fmt: skip

    await ok(
        url, capsys, "policy", "rule-add", "-t", "blue", "-d", "in", "-p", "10",
        "--from-group", "app", "--protocol", "TCP", "--port", "80", "-j", "allow",
        "web-in", "1",
    )  # fmt: skip
    await ok(
        url, capsys, "policy", "rule-add", "-t", "blue", "-d", "out",
        "--to-ip", "10.9.0.0/16", "-j", "deny", "web-in", "2",
    )  # fmt: skip
    rules = table(await ok(url, capsys, "policy", "rule-ls", "-t", "blue", "web-in"))
    assert rules[0][:4] == ["ruleId", "direction", "priority", "endpointGroup"]
    assert rules[1] == ["1", "in", "10", "app", "tcp", "80", "allow"]
    assert rules[2] == ["2", "out", "1", "10.9.0.0/16", "0", "deny"]
    listed = json.loads(
        await ok(url, capsys, "policy", "rule-ls", "-t", "blue", "web-in", "--json")
    )
    assert [r["ruleId"] for r in listed] == ["1", "2"]

    inspected = json.loads(
        await ok(url, capsys, "policy", "inspect", "-t", "blue", "web-in")
    )
    assert inspected["Oper"]["endpointGroups"] == ["blue:app"]
    profile = table(await ok(url, capsys, "netprofile", "ls", "-t", "blue"))
    assert profile[1] == ["blue", "gold", "10mbps", "64", "46"]
    assert await ok(url, capsys, "group", "ls", "-q", "-t", "blue") == "app\n"

    # The group is used by rule 1: refused, exit 1, the reason on stderr.
    assert await netctl(url, "group", "rm", "-t", "blue", "app") == 1
    assert "rule blue:web-in:1" in capsys.readouterr().err
    await ok(url, capsys, "policy", "rule-rm", "-t", "blue", "web-in", "1")
    await ok(url, capsys, "group", "rm", "-t", "blue", "app")
    await ok(url, capsys, "policy", "rm", "-t", "blue", "web-in")
    await ok(url, capsys, "netprofile", "rm", "-t", "blue", "gold")
    assert json.loads(await ok(url, capsys, "--json", "policy", "ls", "-a")) == []


async def test_service_create_list_and_inspect(blue, capsys):
    url = blue
    await ok(
        url, capsys, "service", "create", "-t", "blue", "--network", "web",
        "--selector", "app=web", "--selector", "tier=front",
        "--port", "80:8080:TCP", "--ip", "10.1.1.200", "websvc",
    )  # fmt: skip
    rows = table(await ok(url, capsys, "service", "ls", "-t", "blue"))
    assert rows[1] == [
        "blue", "websvc", "web", "10.1.1.200", "app=web,tier=front", "80:8080:TCP",
    ]  # fmt: skip
    inspected = json.loads(
        await ok(url, capsys, "service", "inspect", "-t", "blue", "websvc")
    )
    assert inspected["Oper"]["serviceVip"] == "10.1.1.200"
    # The network now has a user.
    assert await netctl(url, "net", "rm", "-t", "blue", "web") == 1
    assert "serviceLB blue:websvc" in capsys.readouterr().err


async def test_global_set_info_and_inspect(netmaster_url, capsys):
    url = netmaster_url
    await ok(url, capsys, "global", "set", "--vlan-range", "100-200", "-a", "flood")
    info = table(await ok(url, capsys, "global", "info"))
    assert info[1] == ["global", "100-200", "1-10000", "bridge", "flood"]
    # Flags not given keep their values.
    await ok(url, capsys, "global", "set", "--vxlan-range", "1-20000")
    info = json.loads(await ok(url, capsys, "global", "info", "--json"))
    assert (info["vlans"], info["vxlans"], info["arpMode"]) == (
        "100-200",
        "1-20000",
        "flood",
    )
    inspected = json.loads(await ok(url, capsys, "global", "inspect"))
    assert inspected["Oper"]["freeVLANs"] == 101

    assert await netctl(url, "global", "set", "--vlan-range", "300-200") == 2
    assert "invalid vlans" in capsys.readouterr().err
    assert await netctl(url, "global", "set", "--fwd-mode", "nat") == 2
    assert "invalid fwdMode" in capsys.readouterr().err


async def test_endpoint_inspect(blue, client, capsys):
    await client.request(
        "POST",
        "endpoints/c1:eth0/",
        {"tenantName": "blue", "networkName": "web", "containerID": "c1", "host": "h1"},
    )
    inspected = json.loads(await ok(blue, capsys, "endpoint", "inspect", "c1:eth0"))
    assert inspected["Oper"]["ipAddress"] == ["10.1.1.1/24"]
    assert await ok(blue, capsys, "ep", "ls", "-q") == "c1:eth0\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # Caught before anything is sent.
        (["policy", "rule-add", "--port", "80", "p", "r"], "invalid port"),
        (["policy", "rule-add", "-d", "sideways", "p", "r"], "invalid direction"),
        (
            ["policy", "rule-add", "-d", "out", "--from-group", "g", "p", "r"],
            "invalid fromEndpointGroup",
        ),
        (
            ["policy", "rule-add", "--from-ip", "10.1.1.1/24", "p", "r"],
            "invalid fromIpAddress",
        ),  # noqa: E501
        (["netprofile", "create", "-b", "fast", "np"], "invalid bandwidth"),
        (["netprofile", "create", "-d", "64", "np"], "invalid DSCP"),
        (
            ["service", "create", "--network", "web", "--port", "80:80:TCP", "s"],
            "invalid selectors",
        ),  # noqa: E501
        (
            ["group", "create", "--ip-pool", "10.1.1.9-10.1.1.1", "web", "g"],
            "invalid ipPool",
        ),  # noqa: E501
        # Found malformed by netmaster (it needs the network to know).
        (
            [
                "group",
                "create",
                "-t",
                "blue",
                "--ip-pool",
                "10.9.0.1-10.9.0.5",
                "web",
                "g",
            ],
            "ipPool",
        ),
        (
            [
                "net",
                "create",
                "-t",
                "blue",
                "-e",
                "vlan",
                "-p",
                "5000",
                "-s",
                "10.8.0.0/24",
                "v",
            ],
            "pktTag",
        ),  # noqa: E501
    ],
)
async def test_bad_values_exit_2_naming_the_field(blue, capsys, args, says):
    assert await netctl(blue, *args) == 2
    assert says in capsys.readouterr().err


async def test_refusals_and_unreachable_exit_1(blue, capsys):
    assert (
        await netctl(blue, "group", "create", "-t", "blue", "-p", "nope", "web", "g")
        == 1
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("netctl: RemoteError:") and "policy 'blue:nope' not found" in err
    )
    assert await netctl(blue, "tenant", "rm", "blue") == 1
    assert "network blue:web" in capsys.readouterr().err
    code = await netctl("http://127.0.0.1:9", "--retry-budget", "0", "policy", "ls")
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    for argv in (
        ["policy", "rule-add", "only-policy"],
        ["group", "create", "web"],
        ["service", "create", "s"],
        ["global", "set", "--vlan-range"],
        ["netprofile", "create", "-d", "x", "np"],
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2, argv
    assert cli.main(["--netmaster", "ftp://x", "tenant", "ls"]) == 2
    assert "expected http://" in capsys.readouterr().err


def test_ipam_commands_hook_in_when_present(monkeypatch):
    module = types.ModuleType("netctl.ipam")

    def register_ipam(objects):
        sub = objects.add_parser("ipam").add_subparsers(dest="verb", required=True)
        sub.add_parser("ledger").set_defaults(handler=None, columns=["who"])

    module.register_ipam = register_ipam  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "netctl.ipam", module)
    args = cli.build_parser().parse_args(["ipam", "ledger"])
    assert (args.object, args.verb, args.columns) == ("ipam", "ledger", ["who"])
    assert cli.render([{"who": "netctl"}], args) == "who\n------\nnetctl"
