"""How netmaster words refusals: the field at fault, readable forms, bounded echoes,
body size limit, route hints; and the stream and netctl answers that go with them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.client import NetmasterClient
from api.errors import RemoteError
from api.models import NAME_FORM, Host
from netctl import cli
from netmaster.body_limit import MAX_BODY_BYTES
from netmaster.state import State
from netmaster.stream import follow

JSON = {"Content-Type": "application/json"}


async def post(
    client: NetmasterClient, url: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """POST outside the client's JSON encoding; the status and the JSON answer."""
    async with client.session.post(f"{url}/api/v1/{path}", **kwargs) as response:
        return response.status, json.loads(await response.text())


def network(**fields: Any) -> dict[str, Any]:
    return {"tenantName": "t1", "networkName": "n1", "subnet": "10.1.1.0/24", **fields}


# -- 1. checks between fields name the field ------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"gateway": "10.2.2.2"}, "gateway", "host address of 10.1.1.0/24"),
        ({"gateway": "10.1.1.255"}, "gateway", "host address of 10.1.1.0/24"),
        ({"pktTag": 99999999999999999999999}, "pktTag", "16777215"),
        ({"encap": "vlan", "pktTag": 5000}, "pktTag", "vlan range 1-4094"),
        ({"ipv6Gateway": "fd00::1"}, "ipv6Gateway", "needs an ipv6Subnet"),
        (
            {"ipv6Subnet": "fd00::/64", "ipv6Gateway": "fd01::1"},
            "ipv6Gateway",
            "host address of fd00::/64",
        ),
    ],
)
async def test_network_consistency_errors_name_the_field(
    client, netmaster_url, fields, field, says
):
    status, body = await post(
        client, netmaster_url, "networks/t1:n1/", json=network(**fields)
    )
    assert status == 400 and body["error"] == "ValidationError"
    assert body["field"] == field
    assert body["errors"][0]["loc"] == ["body", field]
    assert says in body["expected"]
    # The value is the field's, not the whole body's.
    assert "tenantName" not in body["value"] + body["message"]


async def test_pkt_tag_is_bounded_on_its_own(client, netmaster_url):
    # Refused as a pktTag even when the encap it is checked against is bad too.
    fields = network(encap="gre", pktTag=99999999999999999999999)
    status, body = await post(client, netmaster_url, "networks/t1:n1/", json=fields)
    assert status == 400 and body["field"] == "encap"
    assert body["errors"][1] == {
        "loc": ["body", "pktTag"],
        "msg": "Input should be less than or equal to 16777215",
    }


async def test_rule_and_netprofile_checks_locate_the_field(client, netmaster_url):
    rule = {"tenantName": "t1", "policyName": "p", "ruleId": "1", "port": 80}
    status, body = await post(client, netmaster_url, "rules/t1:p:1/", json=rule)
    assert status == 400 and body["field"] == "port"
    assert body["errors"][0]["loc"] == ["body", "port"]
    assert "tcp or udp" in body["expected"]

    rule = {"tenantName": "t1", "policyName": "p", "ruleId": "1", "toNetwork": "n"}
    status, body = await post(client, netmaster_url, "rules/t1:p:1/", json=rule)
    assert body["errors"][0]["loc"] == ["body", "toNetwork"]

    profile = {"tenantName": "t1", "profileName": "p", "burst": 5}
    status, body = await post(client, netmaster_url, "netprofiles/t1:p/", json=profile)
    assert status == 400 and body["errors"][0]["loc"] == ["body", "burst"]


# -- 2. a body that is not JSON -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "offset"), [(b"{", 1), (b"tenantName=t1", 0), (b'{"a": 1,}', 8)]
)
async def test_malformed_json_is_reported_on_the_body(
    client, netmaster_url, data, offset
):
    status, body = await post(
        client, netmaster_url, "tenants/t1/", data=data, headers=JSON
    )
    assert status == 400 and body["field"] == "body"
    assert body["expected"] == "a JSON object"
    assert body["message"].startswith(f"body is not valid JSON at offset {offset}: ")
    assert body["errors"] == [{"loc": ["body"], "msg": body["message"]}]


async def test_form_body_is_reported_on_the_body(client, netmaster_url):
    status, body = await post(
        client, netmaster_url, "tenants/t1/", data={"tenantName": "t1"}
    )
    assert status == 400 and body["field"] == "body"
    assert "JSON object" in body["expected"]


# -- 3. name patterns read as words ---------------------------------------------


async def test_name_pattern_mismatch_says_the_form(client, netmaster_url):
    status, body = await post(
        client, netmaster_url, "tenants/t1/", json={"tenantName": "bad name"}
    )
    assert status == 400 and body["field"] == "tenantName"
    assert body["expected"] == NAME_FORM
    assert body["errors"][0]["msg"] == NAME_FORM
    assert "pattern" not in json.dumps(body)

    group = {
        "tenantName": "t1",
        "groupName": "g",
        "networkName": "n",
        "netProfile": "-",
    }
    _, body = await post(client, netmaster_url, "endpointGroups/t1:g/", json=group)
    assert (
        body["field"] == "netProfile" and body["expected"] == f"empty, or {NAME_FORM}"
    )

    # A malformed key in the URL reads the same.
    with pytest.raises(RemoteError) as bad_key:
        await client.request("GET", "tenants/-x/")
    assert NAME_FORM in bad_key.value.message


# -- 4. bounded echoes, bounded bodies ------------------------------------------


async def test_echoed_values_are_clipped(client, netmaster_url):
    huge = "x" * 500_000
    status, body = await post(
        client, netmaster_url, "tenants/t1/", json={"tenantName": huge}
    )
    assert status == 400 and body["field"] == "tenantName"
    assert len(json.dumps(body)) < 2_000
    assert body["value"].endswith("…(500002 chars)")

    # An unknown field's name is echoed too, as the field and in ``errors``.
    status, body = await post(
        client, netmaster_url, "tenants/t1/", json={"tenantName": "t1", huge: 1}
    )
    assert status == 400 and len(json.dumps(body)) < 2_000
    assert body["field"].endswith("…(500000 chars)")


async def test_many_errors_are_counted_not_listed(client, netmaster_url):
    extra = {f"field{i}": i for i in range(100)}
    _, body = await post(
        client, netmaster_url, "tenants/t1/", json={"tenantName": "t1", **extra}
    )
    assert len(body["errors"]) == 21
    assert body["errors"][-1]["msg"] == "80 more not shown"


async def test_body_over_the_limit_is_refused_by_its_length(client, netmaster_url):
    data = io.BytesIO(b" " * (MAX_BODY_BYTES + 1))
    status, body = await post(
        client, netmaster_url, "tenants/t1/", data=data, headers=JSON
    )
    assert status == 413 and body["error"] == "RequestTooLargeError"
    assert f"body of {MAX_BODY_BYTES + 1} bytes" in body["message"]
    assert "limit 1 MiB" in body["message"]

    # At the limit the body is read and judged on its content.
    data = io.BytesIO(b'{"tenantName": "t1"}'.ljust(MAX_BODY_BYTES))
    status, body = await post(
        client, netmaster_url, "tenants/t1/", data=data, headers=JSON
    )
    assert status == 200 and body == {"tenantName": "t1"}


async def test_chunked_body_over_the_limit_is_refused_while_read(client, netmaster_url):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tenantName": "t1", "pad": "'
        for _ in range(40):
            yield b"x" * 32_768

    status, body = await post(
        client, netmaster_url, "tenants/t1/", data=chunks(), headers=JSON
    )
    assert status == 413 and body["error"] == "RequestTooLargeError"
    assert "limit 1 MiB" in body["message"]
    # The refused request changed nothing.
    with pytest.raises(RemoteError) as missing:
        await client.request("GET", "tenants/t1/")
    assert missing.value.status == 404


async def test_small_chunked_body_passes(client, netmaster_url):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tenantName": '
        yield b'"t1"}'

    status, body = await post(
        client, netmaster_url, "tenants/t1/", data=chunks(), headers=JSON
    )
    assert status == 200 and body == {"tenantName": "t1"}


# -- 5. a revision ahead of the store -------------------------------------------


async def test_follow_from_a_revision_ahead_of_the_store_starts_with_a_snapshot(
    embedded_store, caplog
):
    await State(embedded_store).put_host(Host(hostName="h1", vtepIP="198.18.0.1"))
    _, now = await embedded_store.range("/")

    stream = follow(embedded_store, 999_999_999)
    with caplog.at_level(logging.INFO, logger="netmaster.stream"):
        async with asyncio.timeout(5):
            first = json.loads(await anext(stream))
    await stream.aclose()
    assert first["type"] == "snapshot" and first["revision"] == now
    assert [h["hostName"] for h in first["objects"]["hosts"]] == ["h1"]
    assert "requested=999999999" in caplog.text


# -- 6. netctl names the flag ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["service", "create", "-t", "t1", "-s", "bad5", "-p", "80:8080:TCP", "s"],
            "invalid selectors: -l/--selector KEY=VALUE is required",
        ),
        (["netprofile", "create", "-d", "64", "np"], "invalid DSCP (-d/--dscp): "),
        (["tenant", "create", "bad name"], f"invalid tenantName: {NAME_FORM}"),
    ],
)
def test_netctl_names_the_flag_that_sets_the_field(capsys, args, says):
    # Refused before anything is sent: nothing listens on port 9.
    assert cli.main(["--netmaster", "http://127.0.0.1:9", *args]) == 2
    assert says in capsys.readouterr().err


# -- 7. unknown routes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("netProfiles/", "(did you mean 'netprofiles'?)"),
        ("endpointgroups/t1:g/", "(did you mean 'endpointGroups'?)"),
        ("inspect/netProfiles/t1:p/", "(did you mean 'netprofiles'?)"),
        ("nothing/", "collections: endpointGroups, endpoints, globals, hosts"),
        (
            "tenants/a/b/",
            "tenants are at /api/v1/tenants/ and /api/v1/tenants/<tenant>/",
        ),
    ],
)
async def test_unknown_paths_say_what_exists(client, path, says):
    with pytest.raises(RemoteError) as missing:
        await client.request("GET", path)
    assert missing.value.status == 404 and missing.value.kind == "NotFoundError"
    assert says in missing.value.message


async def test_post_to_a_collection_says_the_key_goes_in_the_path(client):
    with pytest.raises(RemoteError) as refused:
        await client.request("POST", "tenants/", {"tenantName": "t1"})
    assert refused.value.status == 405
    assert "POST /api/v1/tenants/<tenant>/" in refused.value.message
    with pytest.raises(RemoteError) as refused:
        await client.request("DELETE", "networks/")
    assert "DELETE /api/v1/networks/<tenant:network>/" in refused.value.message
