"""The batch planner on its own: one transaction for many requests, errors kept apart."""

from __future__ import annotations

import pytest

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    NotFoundError,
    ValidationError,
)
from api.models import Endpoint, EndpointRequest, Network
from netmaster.batch import Job, JobKind, View, plan
from netmaster.ipam import IntervalSet, PoolRecord, pool_key
from netmaster.keys import endpoint_key, ipam_key, network_key
from netmaster.ledger import Caller, LedgerEntry, ledger_key, trim_plan
from netmaster.store.base import Compare, Delete, KeyValue, Put

NOW = 1_700_000_000.0
CALLER = Caller("agent:h1", "cni add")


def network(**fields) -> Network:
    return Network(
        **{
            "tenantName": "t",
            "networkName": "n",
            "subnet": "10.0.0.0/29",
            "gateway": "10.0.0.1",
            "ipv6Subnet": "fd00::/125",
            "ipv6Gateway": "fd00::1",
            "pktTag": 5,
            **fields,
        }
    )


def view(net: Network | None = None, ipv4=(), pool: PoolRecord | None = None) -> View:
    net = net or network()
    return View(
        "t",
        "n",
        KeyValue(network_key("t", "n"), net.model_dump_json().encode(), 7, 9),
        KeyValue(ipam_key("t", "n"), IntervalSet(ipv4).dumps(), 7, 10),
        KeyValue(
            pool_key("t", "n"),
            (pool or PoolRecord(networkRevision=7)).dumps(),
            7,
            11,
        ),
    )


def create(cid: str, **fields) -> Job:
    request = EndpointRequest(
        tenantName="t", networkName="n", containerID=cid, host="h1", **fields
    )
    return Job(JobKind.CREATE, request.endpoint_id, CALLER, request=request)


def release(endpoint: Endpoint, revision: int = 20, quarantine_s: float = 0) -> Job:
    record = KeyValue(
        endpoint_key(endpoint.endpointID),
        endpoint.model_dump_json().encode(),
        revision,
        revision,
    )
    return Job(
        JobKind.RELEASE,
        endpoint.endpointID,
        Caller("netmaster reaper", "lease expired"),
        record=record,
        quarantine_s=quarantine_s,
    )


def written(planned, key: str) -> bytes:
    return next(op.value for op in planned.ops if isinstance(op, Put) and op.key == key)


def test_one_batch_serves_many_with_lowest_free_addresses_dual_stack():
    planned = plan(view(), [create(f"c{i}") for i in range(3)], NOW)
    got = [(e.ipAddress, e.ipv6Address) for e in planned.outcomes]
    # .1 / ::1 are gateways; ::0 is the subnet-router anycast address.
    assert got == [
        ("10.0.0.2", "fd00::2"),
        ("10.0.0.3", "fd00::3"),
        ("10.0.0.4", "fd00::4"),
    ]
    assert planned.outcomes[0].ipv6PrefixLen == 125
    assert planned.outcomes[0].ipv6Gateway == "fd00::1"
    # 2 ops per endpoint (record, ledger) + the two pool records.
    assert len(planned.ops) == 3 * 2 + 2
    assert Compare(endpoint_key("c1:eth0"), 0) in planned.compares
    assert Compare(ipam_key("t", "n"), 10) in planned.compares
    assert Compare(pool_key("t", "n"), 11) in planned.compares
    assert Compare(network_key("t", "n"), 9) in planned.compares
    assert IntervalSet.loads(written(planned, ipam_key("t", "n")), "k").runs() == [
        (2, 4)
    ]
    pool = PoolRecord.loads(written(planned, pool_key("t", "n")), "k")
    assert pool.ipv6 == [(2, 4)] and pool.ledgerNext == 3


def test_exhaustion_midway_fails_only_the_requests_that_do_not_fit():
    # /29 minus network, broadcast and gateway: five addresses; two are held.
    planned = plan(view(ipv4=[(2, 3)]), [create(f"c{i}") for i in range(5)], NOW)
    ok = [o for o in planned.outcomes if isinstance(o, Endpoint)]
    failed = [o for o in planned.outcomes if isinstance(o, ExhaustedError)]
    assert [e.ipAddress for e in ok] == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert len(failed) == 2
    # The failures add nothing to the transaction.
    assert len(planned.ops) == 3 * 2 + 2


def test_static_requests_conflict_individually_v4_and_v6():
    held = view(ipv4=[(2, 2)], pool=PoolRecord(networkRevision=7, ipv6=[(2, 2)]))
    jobs = [
        create("a", ipAddress="10.0.0.2"),
        create("b", ipv6Address="fd00::2"),
        create("c", ipv6Address="fd00::1"),
        create("d", ipv6Address="fd00::5"),
        create("e", ipv6Address="fd01::5"),
        create("f", ipAddress="10.0.0.7"),
    ]
    a, b, c, d, e, f = plan(held, jobs, NOW).outcomes
    assert isinstance(a, ConflictError) and "10.0.0.2 is already in use" in str(a)
    assert isinstance(b, ConflictError) and "fd00::2 is already in use" in str(b)
    assert isinstance(c, ConflictError)  # the IPv6 gateway
    assert isinstance(d, Endpoint) and d.ipv6Address == "fd00::5"
    assert d.ipAddress == "10.0.0.3"
    assert isinstance(e, ValidationError) and e.field == "ipv6Address"
    assert isinstance(f, ValidationError)  # the broadcast address


def test_two_static_requests_for_one_address_in_one_batch_never_both_win():
    planned = plan(
        view(),
        [create("a", ipv6Address="fd00::3"), create("b", ipv6Address="fd00::3")],
        NOW,
    )
    first, second = planned.outcomes
    assert isinstance(first, Endpoint) and isinstance(second, ConflictError)


def test_static_ipv6_on_an_ipv4_network_is_refused():
    v4_only = network(ipv6Subnet="", ipv6Gateway="")
    (outcome,) = plan(view(v4_only), [create("a", ipv6Address="fd00::3")], NOW).outcomes
    assert isinstance(outcome, ValidationError)
    (plain,) = plan(view(v4_only), [create("b")], NOW).outcomes
    assert plain.ipv6Address == "" and plain.ipv6PrefixLen == 0


def test_releases_free_ipv4_and_ipv6_and_are_planned_first():
    first = plan(view(), [create("a"), create("b")], NOW).outcomes
    after = view(ipv4=[(2, 3)], pool=PoolRecord(networkRevision=7, ipv6=[(2, 3)]))
    planned = plan(after, [create("c"), release(first[0])], NOW)
    created, released = planned.outcomes
    assert released.ipAddress == "10.0.0.2"
    # The address freed in this batch is handed out in the same batch.
    assert (created.ipAddress, created.ipv6Address) == ("10.0.0.2", "fd00::2")
    assert Delete(endpoint_key("a:eth0")) in planned.ops
    assert Compare(endpoint_key("a:eth0"), 20) in planned.compares
    actions = [(e.action, e.endpointID) for e in planned.ledger]
    assert actions == [("release", "a:eth0"), ("allocate", "c:eth0")]


def test_quarantined_addresses_are_skipped_until_they_expire():
    (a,) = plan(view(), [create("a")], NOW).outcomes
    held = view(ipv4=[(2, 2)], pool=PoolRecord(networkRevision=7, ipv6=[(2, 2)]))
    planned = plan(held, [release(a, quarantine_s=60)], NOW)
    pool = PoolRecord.loads(written(planned, pool_key("t", "n")), "k")
    assert pool.ipv6 == [] and len(pool.quarantine) == 1
    assert IntervalSet.loads(written(planned, ipam_key("t", "n")), "k").runs() == []
    assert planned.ledger[0].quarantineUntil.startswith("2023-11-14T22:14:20")

    later = view(pool=pool)
    (b,) = plan(later, [create("b")], NOW + 30).outcomes
    assert (b.ipAddress, b.ipv6Address) == ("10.0.0.3", "fd00::3")
    (static,) = plan(later, [create("s", ipAddress="10.0.0.2")], NOW + 30).outcomes
    assert isinstance(static, ConflictError) and "quarantine" in str(static)

    expired = plan(later, [create("c")], NOW + 61)
    assert expired.outcomes[0].ipAddress == "10.0.0.2"
    assert PoolRecord.loads(written(expired, pool_key("t", "n")), "k").quarantine == []


def test_missing_network_fails_creations_and_writes_no_pool():
    gone = View("t", "n", None, None, None)
    planned = plan(gone, [create("a"), create("b")], NOW)
    assert all(isinstance(o, NotFoundError) for o in planned.outcomes)
    assert planned.ops == []
    assert Compare(network_key("t", "n"), 0) in planned.compares


def test_existing_endpoints_read_in_a_retry_are_returned_or_refused():
    (a,) = plan(view(), [create("a")], NOW).outcomes
    retry = view(ipv4=[(2, 2)])
    retry.endpoints = {
        endpoint_key("a:eth0"): KeyValue(
            endpoint_key("a:eth0"), a.model_dump_json().encode(), 12, 12
        )
    }
    same, moved = plan(
        retry, [create("a"), create("a", ipAddress="10.0.0.6")], NOW
    ).outcomes
    assert same == a
    assert isinstance(moved, AlreadyExistsError)


def test_release_guard_that_changed_refuses_the_release():
    (a,) = plan(view(), [create("a")], NOW).outcomes
    job = release(a)
    job.guards = (Compare("/lease/h1", 30),)
    fresh = view(ipv4=[(2, 2)])
    fresh.guards = {"/lease/h1": 31}
    (outcome,) = plan(fresh, [job], NOW).outcomes
    assert isinstance(outcome, ConflictError)
    fresh.guards = {"/lease/h1": 30}
    planned = plan(fresh, [job], NOW)
    assert planned.outcomes[0] == a and Compare("/lease/h1", 30) in planned.compares


def test_a_pool_record_of_an_older_network_starts_afresh_keeping_ledger_numbers():
    stale = PoolRecord(networkRevision=3, ipv6=[(2, 4)], ledgerNext=40, ledgerFloor=5)
    planned = plan(view(pool=stale), [create("a")], NOW)
    assert planned.outcomes[0].ipv6Address == "fd00::2"
    pool = PoolRecord.loads(written(planned, pool_key("t", "n")), "k")
    assert (pool.networkRevision, pool.ledgerNext, pool.ledgerFloor) == (7, 41, 5)
    assert ledger_key("t", "n", 40) in {op.key for op in planned.ops}


def test_ledger_entries_say_who_when_and_why():
    planned = plan(view(), [create("a", ipAddress="10.0.0.4")], NOW)
    (entry,) = planned.ledger
    stored = LedgerEntry.model_validate_json(written(planned, ledger_key("t", "n", 0)))
    assert stored == entry
    assert (entry.action, entry.actor, entry.reason) == (
        "allocate",
        "agent:h1",
        "cni add",
    )
    assert (entry.ipAddress, entry.ipv6Address, entry.host) == (
        "10.0.0.4",
        "fd00::2",
        "h1",
    )
    assert entry.time == "2023-11-14T22:13:20.000+00:00"


@pytest.mark.parametrize(
    ("kept", "due"), [(1000, None), (1064, None), (1065, (0, 65)), (1500, (0, 120))]
)
def test_ledger_trim_is_bounded_and_waits_for_slack(kept, due):
    pool = PoolRecord(ledgerNext=kept)
    result = trim_plan("t", "n", pool, 1000)
    if due is None:
        assert result is None
        return
    ops, floor = result
    assert floor == due[1] and len(ops) == due[1] - due[0]
    assert ops[0] == Delete(ledger_key("t", "n", 0))


def test_every_create_is_conditioned_on_its_endpoint_being_absent():
    fresh = view()
    fresh.endpoints = {endpoint_key("a:eth0"): None}
    planned = plan(fresh, [create("a"), create("b", ipAddress="10.0.0.1")], NOW)
    assert isinstance(planned.outcomes[1], ConflictError)
    # Read absent or not read at all: the commit checks it still is absent.
    assert Compare(endpoint_key("a:eth0"), 0) in planned.compares
    assert Compare(endpoint_key("b:eth0"), 0) in planned.compares


def test_group_pools_and_vips_are_kept_from_other_allocations():
    reserved = view(net=network(subnet="10.0.0.0/28"))
    reserved.pools = {"web": (2, 4), "db": (8, 9)}
    reserved.groups = {"web": (2, 4), "db": (8, 9), "any": (1, 14)}
    reserved.vips = {5}
    planned = plan(
        reserved,
        [
            create("p1"),
            create("p2"),
            create("p3"),
            create("w", endpointGroup="web"),
            create("a", endpointGroup="any"),
            create("v", ipAddress="10.0.0.5"),
        ],
        NOW,
    )
    p1, p2, p3, w, a, v = planned.outcomes
    assert [p1.ipAddress, p2.ipAddress, p3.ipAddress] == [
        "10.0.0.6",
        "10.0.0.7",
        "10.0.0.10",
    ]
    assert w.ipAddress == "10.0.0.2" and a.ipAddress == "10.0.0.11"
    assert isinstance(v, ConflictError)
