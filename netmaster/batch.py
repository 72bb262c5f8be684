"""One batch of endpoint creations and releases on one network, planned without I/O.

The allocator reads a ``View`` of a network (its record, its IPv4 runs, its
``PoolRecord``; after a lost compare-and-swap also the endpoint records and
guard keys the jobs name) and ``plan`` turns the view and the jobs into one
store transaction: compares pinning everything read, the endpoint puts and
deletes, one ledger entry per change, and the two pool records.

A job that cannot be served (network gone, pool exhausted, static address
taken, endpoint already elsewhere) gets its error in the plan and adds nothing
to the transaction, so one bad request never spoils the others in its batch.
Releases are planned before creations, so an address freed in a batch can be
handed out in the same batch, unless it goes to quarantine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    NetpluginError,
    NotFoundError,
    ValidationError,
)
from api.models import Endpoint, EndpointRequest, Network, Subnet, Subnet6, mac_for
from netmaster.ipam import IntervalSet, PoolRecord, QuarantineEntry, pool_key
from netmaster.keys import endpoint_key, ipam_key, network_key
from netmaster.ledger import Action, Caller, LedgerEntry, iso_time, ledger_key
from netmaster.store.base import Compare, Delete, KeyValue, Op, Put
from netmaster.txn import decode

#: Store operations one job adds: its endpoint record and its ledger entry.
OPS_PER_JOB = 2
#: Operations every batch adds: the IPv4 runs and the pool record.
OPS_PER_BATCH = 2


class JobKind(StrEnum):
    CREATE = "create"
    RELEASE = "release"
    #: Nothing to do but write the pool record: drops expired quarantine.
    SWEEP = "sweep"


@dataclass(eq=False, slots=True)
class Job:
    """One request waiting for a batch. ``guards`` must hold for it to apply."""

    kind: JobKind
    endpoint_id: str
    caller: Caller
    #: CREATE: what was asked.
    request: EndpointRequest | None = None
    #: RELEASE: the endpoint record as the caller read it.
    record: KeyValue | None = None
    #: RELEASE: keep the addresses off the free list this long (0: free at once).
    quarantine_s: float = 0.0
    guards: tuple[Compare, ...] = ()


#: What a job gets: its endpoint (created, existing or released), None for a
#: SWEEP, or the error that stopped it.
Outcome = Endpoint | None | NetpluginError


@dataclass(slots=True)
class View:
    """What the allocator read (or kept from its last commit) for one network."""

    tenant: str
    network_name: str
    network: KeyValue | None
    ipv4: KeyValue | None
    pool: KeyValue | None
    #: Read in this attempt. An endpoint key absent here was not read, and is
    #: then assumed absent (its compare says so, and a failed txn re-reads it).
    endpoints: dict[str, KeyValue | None] = field(default_factory=dict)
    #: Current mod_revision of guard keys read in this attempt.
    guards: dict[str, int] = field(default_factory=dict)
    #: Endpoint group name -> its IPv4 offset range, or why it cannot be used.
    groups: dict[str, tuple[int, int] | NetpluginError] = field(default_factory=dict)
    #: Group pools (kept from requests that name another group, or none) and
    #: service VIPs (kept from everyone), as IPv4 offsets.
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    vips: set[int] = field(default_factory=set)
    #: Compares pinning the records behind ``groups``, ``pools`` and ``vips``.
    group_compares: list[Compare] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    compares: list[Compare]
    ops: list[Op]
    #: One per job, in job order.
    outcomes: list[Outcome]
    #: The pool records this plan writes (key -> value), to cache after commit.
    writes: dict[str, bytes]
    ledger: list[LedgerEntry]


def plan(view: View, jobs: Sequence[Job], now_s: float) -> Plan:
    """The transaction serving ``jobs`` against ``view`` at wall time ``now_s``.

    Job endpoint ids must be distinct (the allocator defers repeats to the
    next batch: etcd refuses a key written twice in one transaction).
    """
    batch = _Batch(view, now_s)
    outcomes: dict[int, Outcome] = {}
    for index, job in enumerate(jobs):
        if job.kind is JobKind.RELEASE:
            outcomes[index] = batch.release(job)
    for index, job in enumerate(jobs):
        if job.kind is JobKind.CREATE:
            outcomes[index] = batch.create(job)
        elif job.kind is JobKind.SWEEP:
            outcomes[index] = None
    return batch.finish([outcomes[i] for i in range(len(jobs))])


class _Batch:
    """The mutable state of one plan: pools, compares, ops and ledger so far."""

    def __init__(self, view: View, now_s: float) -> None:
        self.view = view
        self.now_s = now_s
        self.tenant, self.name = view.tenant, view.network_name
        self.v4_key = ipam_key(self.tenant, self.name)
        self.pool_key = pool_key(self.tenant, self.name)
        self.compares: dict[tuple[str, int], Compare] = {}
        for compare in (
            Compare(network_key(self.tenant, self.name), _rev(view.network)),
            Compare(self.v4_key, _rev(view.ipv4)),
            Compare(self.pool_key, _rev(view.pool)),
            *view.group_compares,
        ):
            self._pin(compare)
        self.ops: list[Op] = []
        self.ledger: list[LedgerEntry] = []

        self.network = decode(Network, view.network) if view.network else None
        # Parsed once per batch: parsing is most of the cost of a small plan.
        self.subnet = self.network.parsed_subnet() if self.network else None
        self.subnet6 = self.network.parsed_subnet6() if self.network else None
        self.ipv4 = (
            IntervalSet.loads(view.ipv4.value, self.v4_key)
            if view.ipv4
            else IntervalSet()
        )
        self.pool = (
            PoolRecord.loads(view.pool.value, self.pool_key)
            if view.pool
            else PoolRecord()
        )
        self.v4_changed = view.ipv4 is None and self.network is not None
        self.pool_changed = self._start_generation()
        self.ipv6 = IntervalSet(self.pool.ipv6)

        # Held addresses plus what may not be handed out: gateways, quarantine.
        self.taken4 = IntervalSet(self.ipv4.runs())
        self.taken6 = IntervalSet(self.ipv6.runs())
        self.pool_changed |= self._expire_quarantine()
        for entry in self.pool.quarantine:
            self._hold(self.taken4, self.taken6, entry.ipv4, entry.ipv6)
        if self.network is not None:
            self._reserve_gateways(self.network)
        for vip in view.vips:
            self.taken4.add(vip)

    # -- set-up -----------------------------------------------------------------

    def _start_generation(self) -> bool:
        """Start a fresh record if the one read belongs to an older network."""
        if self.view.network is None:
            return False
        revision = self.view.network.create_revision
        if self.pool.networkRevision == revision:
            return False
        self.pool = PoolRecord(
            networkRevision=revision,
            ledgerNext=self.pool.ledgerNext,
            ledgerFloor=self.pool.ledgerFloor,
        )
        return True

    def _expire_quarantine(self) -> bool:
        kept = [q for q in self.pool.quarantine if q.until > self.now_s]
        expired = len(kept) != len(self.pool.quarantine)
        self.pool.quarantine = kept
        return expired

    def _reserve_gateways(self, network: Network) -> None:
        if self.subnet is not None and network.gateway:
            gateway = ipaddress.IPv4Address(network.gateway)
            self.taken4.add(self.subnet.offset(gateway))
        if self.subnet6 is not None and network.ipv6Gateway:
            gateway6 = ipaddress.IPv6Address(network.ipv6Gateway)
            self.taken6.add(self.subnet6.offset(gateway6))

    @staticmethod
    def _hold(
        four: IntervalSet, six: IntervalSet, v4: int | None, v6: int | None
    ) -> None:
        if v4 is not None:
            four.add(v4)
        if v6 is not None:
            six.add(v6)

    def _pin(self, compare: Compare) -> None:
        self.compares.setdefault((compare.key, compare.mod_revision), compare)

    # -- releases ---------------------------------------------------------------

    def release(self, job: Job) -> Outcome:
        key = endpoint_key(job.endpoint_id)
        record = self.view.endpoints.get(key, job.record)
        if record is None:
            return NotFoundError("endpoint", job.endpoint_id)
        for guard in job.guards:
            current = self.view.guards.get(guard.key, guard.mod_revision)
            if current != guard.mod_revision:
                return ConflictError(
                    f"endpoint {job.endpoint_id!r} was not released: {guard.key} "
                    "changed since the release was decided"
                )
        endpoint = decode(Endpoint, record)
        if (endpoint.tenantName, endpoint.networkName) != (self.tenant, self.name):
            return ConflictError(
                f"endpoint {job.endpoint_id!r} moved to network "
                f"{endpoint.tenantName}:{endpoint.networkName}; retry"
            )

        self._pin(Compare(key, record.mod_revision))
        for guard in job.guards:
            self._pin(guard)
        self.ops.append(Delete(key))
        v4, v6 = self._offsets(endpoint)
        if v4 is not None:
            self.ipv4.discard(v4)
            self.v4_changed = True
        if v6 is not None:
            self.ipv6.discard(v6)
            self.pool_changed = True

        until = ""
        if job.quarantine_s > 0 and (v4 is not None or v6 is not None):
            entry = QuarantineEntry(
                endpointID=endpoint.endpointID,
                ipv4=v4,
                ipv6=v6,
                until=self.now_s + job.quarantine_s,
            )
            self.pool.quarantine.append(entry)
            until = iso_time(entry.until)
        else:
            if v4 is not None:
                self.taken4.discard(v4)
            if v6 is not None:
                self.taken6.discard(v6)
        self._record(Action.RELEASE, endpoint, job.caller, until)
        return endpoint

    def _offsets(self, endpoint: Endpoint) -> tuple[int | None, int | None]:
        """Where ``endpoint``'s addresses sit in this network's pools."""
        subnet, subnet6 = self.subnet, self.subnet6
        if subnet is None:
            return None, None
        address = ipaddress.IPv4Address(endpoint.ipAddress)
        v4 = subnet.offset(address) if address in subnet.network else None
        v6 = None
        if subnet6 is not None and endpoint.ipv6Address:
            address6 = ipaddress.IPv6Address(endpoint.ipv6Address)
            if address6 in subnet6.network:
                v6 = subnet6.offset(address6)
        return v4, v6

    # -- creations --------------------------------------------------------------

    def create(self, job: Job) -> Outcome:
        request = job.request
        if request is None:
            raise TypeError("a CREATE job carries its request")
        key = endpoint_key(job.endpoint_id)
        if key not in self.view.endpoints:
            # Not read: every outcome, an error too, assumes the endpoint is
            # absent; if it exists the commit fails and a re-read finds it.
            self._pin(Compare(key, 0))
        existing = self.view.endpoints.get(key)
        if existing is not None:
            try:
                return same_endpoint(decode(Endpoint, existing), request)
            except AlreadyExistsError as exc:
                return exc
        network = self.network
        if network is None:
            return NotFoundError("network", f"{self.tenant}:{self.name}")

        try:
            v4 = self._pick_v4(network, request)
            v6 = self._pick_v6(network, request)
        except NetpluginError as exc:
            return exc
        self._hold(self.ipv4, self.ipv6, v4, v6)
        self._hold(self.taken4, self.taken6, v4, v6)
        self.v4_changed = True
        self.pool_changed |= v6 is not None

        endpoint = build_endpoint(network, request, v4, v6, self.subnet, self.subnet6)
        self._pin(Compare(key, 0))
        self.ops.append(Put(key, endpoint.model_dump_json().encode()))
        self._record(Action.ALLOCATE, endpoint, job.caller, "")
        return endpoint

    def _pick_v4(self, network: Network, request: EndpointRequest) -> int:
        subnet = self.subnet or network.parsed_subnet()
        first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
        where = f"{subnet.first}-{subnet.last}"
        if request.endpointGroup:
            group = self.view.groups.get(request.endpointGroup)
            if group is None:
                raise NotFoundError(
                    "endpoint group",
                    f"{self.tenant}:{request.endpointGroup}",
                    f"create it on network {network.key} first",
                )
            if isinstance(group, NetpluginError):
                raise group
            first, last = group
            where = f"{subnet.address(first)}-{subnet.address(last)}"
        if request.ipAddress:
            offset = subnet.offset(ipaddress.IPv4Address(request.ipAddress))
            if not first <= offset <= last:
                raise ValidationError(
                    "ipAddress", request.ipAddress, f"an address in {where}"
                )
            self._check_taken("ipAddress", request.ipAddress, offset, self.taken4, 4)
            return offset
        others = [r for g, r in self.view.pools.items() if g != request.endpointGroup]
        free = _lowest_free_outside(self.taken4, first, last, others)
        if free is None:
            pool = (
                f"address pool of group {request.endpointGroup}"
                if request.endpointGroup
                else "address pool"
            )
            raise ExhaustedError(pool, network.key)
        return free

    def _pick_v6(self, network: Network, request: EndpointRequest) -> int | None:
        subnet6 = self.subnet6
        if subnet6 is None:
            if request.ipv6Address:
                raise ValidationError(
                    "ipv6Address",
                    request.ipv6Address,
                    f"no IPv6 address: network {network.key} has no ipv6Subnet",
                )
            return None
        first, last = subnet6.offset(subnet6.first), subnet6.offset(subnet6.last)
        if request.ipv6Address:
            address = ipaddress.IPv6Address(request.ipv6Address)
            if address not in subnet6.network or address == subnet6.network[0]:
                raise ValidationError(
                    "ipv6Address",
                    request.ipv6Address,
                    f"a host address of {subnet6.network.compressed}",
                )
            offset = subnet6.offset(address)
            self._check_taken(
                "ipv6Address", request.ipv6Address, offset, self.taken6, 6
            )
            return offset
        free = self.taken6.lowest_free(first, last)
        if free is None:
            raise ExhaustedError("IPv6 address pool", network.key)
        return free

    def _check_taken(
        self, field_: str, text: str, offset: int, taken: IntervalSet, family: int
    ) -> None:
        if offset not in taken:
            return
        for entry in self.pool.quarantine:
            if (entry.ipv4 if family == 4 else entry.ipv6) == offset:
                raise ConflictError(
                    f"{field_} {text} on network {self.tenant}:{self.name} is in "
                    f"quarantine until {iso_time(entry.until)} (it was reclaimed "
                    f"from endpoint {entry.endpointID})"
                )
        raise ConflictError(
            f"{field_} {text} is already in use on network {self.tenant}:{self.name}"
        )

    # -- ledger and result ------------------------------------------------------

    def _record(
        self, action: Action, endpoint: Endpoint, caller: Caller, until: str
    ) -> None:
        if self.network is None:
            # No pool record is written without a network, so no sequence
            # number can be taken; only a release of a stray endpoint gets here.
            return
        seq = self.pool.ledgerNext
        self.pool.ledgerNext += 1
        self.pool_changed = True
        entry = LedgerEntry(
            seq=seq,
            time=iso_time(self.now_s),
            action=action,
            endpointID=endpoint.endpointID,
            host=endpoint.host,
            ipAddress=endpoint.ipAddress,
            ipv6Address=endpoint.ipv6Address,
            actor=caller.actor,
            reason=caller.reason,
            quarantineUntil=until,
        )
        self.ledger.append(entry)
        self.ops.append(
            Put(
                ledger_key(self.tenant, self.name, seq),
                entry.model_dump_json().encode(),
            )
        )

    def finish(self, outcomes: list[Outcome]) -> Plan:
        writes: dict[str, bytes] = {}
        if self.v4_changed and self.network is not None:
            writes[self.v4_key] = self.ipv4.dumps()
        if self.pool_changed and self.network is not None:
            self.pool.ipv6 = self.ipv6.runs()
            writes[self.pool_key] = self.pool.dumps()
        ops = [*self.ops, *(Put(key, value) for key, value in writes.items())]
        return Plan(list(self.compares.values()), ops, outcomes, writes, self.ledger)


def build_endpoint(
    network: Network,
    request: EndpointRequest,
    v4: int,
    v6: int | None,
    subnet: Subnet | None = None,
    subnet6: Subnet6 | None = None,
) -> Endpoint:
    """The endpoint record; ``subnet``/``subnet6`` save parsing them again."""
    subnet = subnet or network.parsed_subnet()
    address = subnet.address(v4)
    if subnet6 is None:
        subnet6 = network.parsed_subnet6()
    ipv6 = ""
    if subnet6 is not None and v6 is not None:
        ipv6 = subnet6.address(v6).compressed
    return Endpoint(
        endpointID=request.endpoint_id,
        tenantName=request.tenantName,
        networkName=request.networkName,
        containerID=request.containerID,
        ifname=request.ifname,
        host=request.host,
        ipAddress=str(address),
        prefixLen=subnet.network.prefixlen,
        gateway=network.gateway,
        macAddress=mac_for(address),
        encap=network.encap,
        pktTag=network.pktTag,
        ipv6Address=ipv6,
        ipv6PrefixLen=subnet6.network.prefixlen if ipv6 and subnet6 else 0,
        ipv6Gateway=network.ipv6Gateway if ipv6 else "",
        endpointGroup=request.endpointGroup,
    )


def same_endpoint(existing: Endpoint, request: EndpointRequest) -> Endpoint:
    """A repeated create: the endpoint that exists, if the request agrees with it."""
    if (
        (existing.tenantName, existing.networkName)
        != (request.tenantName, request.networkName)
        or (request.ipAddress and request.ipAddress != existing.ipAddress)
        or (request.ipv6Address and request.ipv6Address != existing.ipv6Address)
        or (request.endpointGroup != existing.endpointGroup)
        # The same container id on two hosts is a clash, not a retry.
        or request.host != existing.host
    ):
        raise AlreadyExistsError(
            "endpoint",
            existing.endpointID,
            f"it is on {existing.tenantName}:{existing.networkName} with "
            f"{existing.ipAddress} on host {existing.host}; delete it first",
        )
    return existing


def _lowest_free_outside(
    taken: IntervalSet, first: int, last: int, pools: Sequence[tuple[int, int]]
) -> int | None:
    """The lowest value of ``[first, last]`` neither taken nor in a pool."""
    candidate = taken.lowest_free(first, last)
    while candidate is not None:
        inside = next((p for p in pools if p[0] <= candidate <= p[1]), None)
        if inside is None:
            return candidate
        if inside[1] >= last:
            return None
        candidate = taken.lowest_free(inside[1] + 1, last)
    return None


def _rev(kv: KeyValue | None) -> int:
    return kv.mod_revision if kv else 0


def offsets_of(
    network: Network, endpoints: Mapping[str, Endpoint]
) -> tuple[IntervalSet, IntervalSet]:
    """The IPv4 and IPv6 offsets ``endpoints`` hold on ``network`` (for checks)."""
    subnet, subnet6 = network.parsed_subnet(), network.parsed_subnet6()
    four, six = IntervalSet(), IntervalSet()
    for endpoint in endpoints.values():
        four.add(subnet.offset(ipaddress.IPv4Address(endpoint.ipAddress)))
        if subnet6 is not None and endpoint.ipv6Address:
            six.add(subnet6.offset(ipaddress.IPv6Address(endpoint.ipv6Address)))
    return four, six
