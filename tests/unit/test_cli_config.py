"""Flags of the agent and netmaster: bad values are ConfigErrors naming the flag."""

from __future__ import annotations

import pytest

from api.errors import ConfigError
from netmaster import cli as netmaster_cli
from netplugin import config

GOOD = ["--vtep-ip", "198.18.0.1"]


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--log-level", "LOUD"], "--log-level"),
        (["--host", "bad host"], "--host"),
        (["--vtep-ip", "nonsense"], "--vtep-ip"),
        (["--underlay-mtu", "10"], "--underlay-mtu"),
        (["--datapath", "warp"], "--datapath"),
        (["--netmaster", "ftp://x"], "--netmaster"),
        (["--ovsdb", "/no/scheme"], "--ovsdb"),
    ],
)
def test_agent_flags_are_checked(flags, names):
    with pytest.raises(ConfigError) as bad:
        config.load([*GOOD, *flags])
    assert bad.value.key == names


def test_agent_accepts_several_netmasters():
    loaded = config.load([*GOOD, "--netmaster", "http://a:9999,http://b:9999"])
    assert loaded.netmaster_url == "http://a:9999,http://b:9999"
    assert loaded.log_level == "INFO"


@pytest.mark.parametrize(
    "flags",
    [["--log-level", "LOUD"], ["--lease-ttl", "-1"], ["--quarantine", "-5"]],
)
def test_netmaster_flags_fail_cleanly(flags, capsys):
    assert netmaster_cli.main(["--store", "embedded:///nonexistent.db", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("netmaster: ConfigError:") and flags[0] in err
