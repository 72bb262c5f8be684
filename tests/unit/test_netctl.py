"""netctl against a real netmaster: flags, tables, JSON, errors and exit codes."""

from __future__ import annotations

import asyncio
import json

import pytest

from netctl import cli


async def netctl(url: str, *args: str) -> int:
    # main() runs its own event loop, so it gets a thread of its own here.
    return await asyncio.to_thread(cli.main, ["--netmaster", url, *args])


async def test_create_list_inspect_and_remove(netmaster_url, capsys):
    assert await netctl(netmaster_url, "tenant", "create", "blue") == 0
    assert (
        await netctl(
            netmaster_url,
            "net",
            "create",
            "-t",
            "blue",
            "-e",
            "vlan",
            "-p",
            "12",
            "-s",
            "10.5.0.0/24",
            "-g",
            "10.5.0.1",
            "web",
        )  # fmt: skip
        == 0
    )
    capsys.readouterr()
    assert await netctl(netmaster_url, "net", "ls", "-t", "blue") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "tenantName",
        "networkName",
        "encap",
        "pktTag",
        "subnet",
        "gateway",
    ]
    assert table[2].split() == ["blue", "web", "vlan", "12", "10.5.0.0/24", "10.5.0.1"]

    assert (
        await netctl(netmaster_url, "--json", "net", "inspect", "-t", "blue", "web")
        == 0
    )
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["Oper"]["availableAddressesCount"] == 253

    assert await netctl(netmaster_url, "net", "rm", "-t", "blue", "web") == 0
    assert await netctl(netmaster_url, "--json", "network", "ls", "-a") == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_refusals_exit_1_with_the_reason(netmaster_url, capsys):
    code = await netctl(
        netmaster_url, "net", "create", "-t", "nope", "-s", "10.0.0.0/24", "n"
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("netctl: RemoteError:") and "create the tenant first" in err


async def test_bad_flags_exit_2_naming_the_field(netmaster_url, capsys):
    code = await netctl(
        netmaster_url, "net", "create", "-e", "gre", "-s", "10.0.0.0/24", "n"
    )
    assert code == 2
    assert "invalid encap" in capsys.readouterr().err
    code = await netctl(netmaster_url, "net", "create", "-s", "10.0.0.0/33", "n")
    assert code == 2
    assert "invalid subnet" in capsys.readouterr().err


async def test_unreachable_netmaster_is_a_clear_error(capsys):
    code = await netctl("http://127.0.0.1:9", "--retry-budget", "0", "tenant", "ls")
    assert code == 1
    assert "cannot reach http://127.0.0.1:9/api/v1/tenants/" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exited:
        cli.main(["net", "create"])
    assert exited.value.code == 2
