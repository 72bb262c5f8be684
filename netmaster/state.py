"""netmaster's objects on the store: create-or-update and delete with integrity.

One engine serves every kind of ``netmaster.registry``. Inside one optimistic
transaction, ``put`` checks that everything the object links to exists, adds
the object to those objects' reverse-index entries (dropping entries an
update no longer needs) and writes it; ``delete`` refuses while anything
still refers to the object, and otherwise unlinks and removes it (a policy
takes its rules along). Nothing is ever half written and no reference
dangles, whatever runs concurrently, here or on another replica.

Per-kind rules are small handlers: a network takes a pktTag from the global
ranges and owns its address pool, a group takes an id from a persisted pool
and may reserve a sub-range of its network, a service may claim a VIP, the
global ranges cannot shrink past a tag in use. Endpoints and addresses are
``netmaster.endpoints``' job; a network's endpoints are found through its
address pool, not the reverse index (they are many and change often).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel

from api.errors import (
    AlreadyExistsError,
    ConflictError,
    ExhaustedError,
    InUseError,
    NotFoundError,
    ValidationError,
)
from api.models import Encap, Host, Network, NetworkOper, Tenant
from api.objects import (
    GROUP_ID_RANGE,
    EndpointGroup,
    EndpointGroupOper,
    EndpointOper,
    Global,
    GlobalOper,
    Netprofile,
    NetprofileOper,
    Policy,
    PolicyOper,
    Rule,
    RuleOper,
    ServiceLB,
    ServiceLBOper,
    TenantOper,
    bandwidth_bps,
    format_runs,
)
from netmaster.endpoints import Endpoints
from netmaster.ipam import IntervalSet
from netmaster.keys import group_id_pool_key, host_key, ipam_key, tag_pool_key
from netmaster.registry import (
    ENDPOINT_GROUP,
    GLOBAL,
    HOST,
    KINDS,
    NETWORK,
    RULE,
    TENANT,
    Kind,
    Link,
    Plan,
)
from netmaster.store.base import Store
from netmaster.txn import Fence, Transactions, decode, encode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class Handler(Generic[M]):
    """Per-kind rules around the engine; the defaults add nothing."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def prepare(self, plan: Plan, old: M | None, new: M) -> M:
        """Check ``new`` against the state, plan extra writes; return what to store.

        Runs after the engine checked that every link exists. Returning ``old``
        unchanged means the request changes nothing and nothing is written.
        """
        return new

    async def users(self, plan: Plan, obj: M) -> list[str]:
        """Referrers the reverse index does not hold (a network's endpoints)."""
        return []

    async def release(self, plan: Plan, obj: M) -> None:
        """Plan what deleting ``obj`` frees besides its record (tags, ids)."""

    def lock(self, key: str) -> AbstractAsyncContextManager[object]:
        """Held around a delete's retries; see NetworkHandler."""
        return contextlib.nullcontext()


class State:
    """Every netmaster object over a Store; endpoints live in ``endpoints``."""

    def __init__(self, store: Store, fence: Fence | None = None) -> None:
        self.store = store
        self.txn = Transactions(store, fence)
        self.endpoints = Endpoints(self.txn)
        self._handlers: dict[str, Handler[Any]] = {
            name: Handler(self) for name in KINDS
        }
        self._handlers.update(
            network=NetworkHandler(self),
            endpointGroup=GroupHandler(self),
            serviceLB=ServiceHandler(self),
        )

        # Serialises the writes of one tenant inside this replica: they share
        # the tenant's reverse-index entry, so concurrent ones would mostly
        # lose compare-and-swaps and retry. The store's compares still keep
        # other replicas apart.
        self._scope_locks: dict[str, asyncio.Lock] = {}

    def _handler(self, kind: Kind[M]) -> Handler[M]:
        return cast(Handler[M], self._handlers[kind.name])

    def _lock(self, kind: Kind[Any], key: str) -> asyncio.Lock:
        first = key.partition(":")[0]
        scope = f"tenant {first}" if kind.key_fields[0] == "tenantName" else kind.name
        return self._scope_locks.setdefault(scope, asyncio.Lock())

    # -- the engine -----------------------------------------------------------

    async def put_object(self, kind: Kind[M], obj: M) -> M:
        """Create ``obj`` or update it in place; what was stored.

        Raises NotFoundError when something it links to is missing, and the
        handler's ConflictError/ValidationError/ExhaustedError.
        """
        key = kind.key_of(obj)
        me = Link(kind.name, key)
        handler = self._handler(kind)

        async def attempt() -> M:
            plan = Plan(self.txn, f"store {me}")
            current = await plan.read(kind.record_key(key))
            old = decode(kind.model, current.kv) if current.kv else None
            links = kind.links(obj)
            for link in links:
                await self._require(plan, link, me)
            stored = await handler.prepare(plan, old, obj)
            if stored == old:
                return stored

            old_links = set(kind.links(old)) if old is not None else set()
            for link in set(links) - old_links:
                await plan.add_user(link, me)
            for link in old_links - set(links):
                await plan.remove_user(link, me)
            plan.put(current.key, encode(stored))
            await plan.commit()
            log.info(
                "object stored kind=%s key=%s created=%s", kind.name, key, old is None
            )
            return stored

        async with self._lock(kind, key):
            return await self.txn.retry(f"store {me}", attempt)

    @staticmethod
    async def _require(plan: Plan, link: Link, user: Link) -> None:
        target = await plan.read(KINDS[link.kind].record_key(link.key))
        if target.kv is None:
            raise NotFoundError(
                link.kind,
                link.key,
                f"create the {link.kind} first ({user} names it in {link.field})",
            )

    async def delete_object(self, kind: Kind[M], key: str) -> M:
        """Remove the object; InUseError naming whatever still refers to it."""
        record = kind.record_key(key)
        me = Link(kind.name, key)
        handler = self._handler(kind)

        async def attempt() -> M:
            plan = Plan(self.txn, f"delete {me}")
            current = await plan.read(record)
            if current.kv is None:
                raise NotFoundError(kind.name, key)
            obj = decode(kind.model, current.kv)
            users = await plan.users(me)
            blocking = [str(u) for u in users if u.kind not in kind.cascade]
            blocking += await handler.users(plan, obj)
            if blocking:
                raise InUseError(kind.name, key, blocking)

            # Cascaded kinds (a policy's rules) are referred to by nothing, so
            # removing them needs no check of their own.
            for child in users:
                await self._drop(plan, KINDS[child.kind], child.key, keep=me)
            await handler.release(plan, obj)
            for link in kind.links(obj):
                await plan.remove_user(link, me)
            await plan.forget(me)
            plan.delete(record)
            await plan.commit()
            log.info("object deleted kind=%s key=%s", kind.name, key)
            return obj

        async with self._lock(kind, key), handler.lock(key):
            return await self.txn.retry(f"delete {me}", attempt)

    async def _drop(self, plan: Plan, kind: Kind[Any], key: str, keep: Link) -> None:
        current = await plan.read(kind.record_key(key))
        if current.kv is None:
            return
        obj = decode(kind.model, current.kv)
        await self._handler(kind).release(plan, obj)
        for link in kind.links(obj):
            if link != keep:
                await plan.remove_user(link, Link(kind.name, key))
        plan.delete(current.key)

    async def get_object(self, kind: Kind[M], key: str) -> M:
        return await self.txn.get(kind.record_key(key), kind.model, kind.name, key)

    async def list_objects(self, kind: Kind[M]) -> list[M]:
        return await self.txn.list(kind.prefix(), kind.model)

    async def users_of(self, kind: Kind[Any], key: str) -> list[Link]:
        """Who refers to the object now (a read outside any transaction)."""
        return await Plan(self.txn, "read").users(Link(kind.name, key))

    # -- global ---------------------------------------------------------------

    async def global_in(self, plan: Plan) -> Global:
        """The global settings, pinned in ``plan`` (the defaults while unset)."""
        read = await plan.read(GLOBAL.record_key("global"))
        return decode(Global, read.kv) if read.kv else Global()

    async def get_global(self) -> Global:
        return await self.global_in(Plan(self.txn, "read"))

    async def put_global(self, wanted: Global) -> Global:
        """Change the global settings; ConflictError if networks would not fit."""
        return await self._set_global(wanted, reset=False)

    async def reset_global(self) -> Global:
        """Back to the defaults (what DELETE means for the one global object)."""
        return await self._set_global(Global(), reset=True)

    async def _set_global(self, wanted: Global, reset: bool) -> Global:
        async def attempt() -> Global:
            plan = Plan(self.txn, "store global")
            record = await plan.read(GLOBAL.record_key("global"))
            current = decode(Global, record.kv) if record.kv else Global()
            if current == wanted and (record.kv is None) == reset:
                return wanted
            await self._check_global_change(plan, current, wanted)
            if reset:
                plan.delete(record.key)
            else:
                plan.put(record.key, encode(wanted))
            await plan.commit()
            log.info(
                "global stored vlans=%s vxlans=%s fwd_mode=%s arp_mode=%s",
                wanted.vlans,
                wanted.vxlans,
                wanted.fwdMode,
                wanted.arpMode,
            )
            return wanted

        return await self.txn.retry("store global", attempt)

    async def _check_global_change(
        self, plan: Plan, current: Global, wanted: Global
    ) -> None:
        in_use: dict[Encap, IntervalSet] = {}
        for encap in Encap:
            read = await plan.read(tag_pool_key(encap))
            in_use[encap] = IntervalSet.loads(read.value or b"[]", read.key)
        if wanted.fwdMode != current.fwdMode and any(len(p) for p in in_use.values()):
            names = [n.key for n in await self.list_objects(NETWORK)]
            raise ConflictError(
                f"fwdMode cannot change from {current.fwdMode} to {wanted.fwdMode} "
                f"while networks exist ({', '.join(names[:5])}"
                f"{' ...' if len(names) > 5 else ''}); delete them first"
            )
        for encap, (low, high), field in (
            (Encap.VLAN, wanted.vlan_range(), "vlans"),
            (Encap.VXLAN, wanted.vxlan_range(), "vxlans"),
        ):
            pool = in_use[encap]
            if pool.count_in(low, high) == len(pool):
                continue
            outside = [
                f"{n.key} ({encap} {n.pktTag})"
                for n in await self.list_objects(NETWORK)
                if n.encap is encap and not low <= n.pktTag <= high
            ]
            raise ConflictError(
                f"{field} {low}-{high} would leave networks outside it: "
                f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''}; "
                "delete them or choose a range that holds their tags"
            )

    async def global_oper(self) -> GlobalOper:
        glob = await self.get_global()
        pools: dict[Encap, IntervalSet] = {}
        for encap in Encap:
            kv = await self.store.get(tag_pool_key(encap))
            pools[encap] = IntervalSet.loads(kv.value if kv else b"[]", "pool")
        vlan_low, vlan_high = glob.vlan_range()
        vxlan_low, vxlan_high = glob.vxlan_range()
        vlans, vxlans = pools[Encap.VLAN], pools[Encap.VXLAN]
        return GlobalOper(
            numNetworks=len(vlans) + len(vxlans),
            vlansInUse=format_runs(vlans.runs()),
            vxlansInUse=format_runs(vxlans.runs()),
            freeVLANs=vlan_high - vlan_low + 1 - vlans.count_in(vlan_low, vlan_high),
            freeVXLANs=vxlan_high
            - vxlan_low
            + 1
            - vxlans.count_in(vxlan_low, vxlan_high),
            freeVXLANsStart=vxlans.lowest_free(vxlan_low, vxlan_high) or 0,
        )

    # -- runtime views ("Oper") -------------------------------------------------

    async def tenant_oper(self, tenant: Tenant) -> TenantOper:
        users = await self.users_of(TENANT, tenant.tenantName)
        counts = {name: 0 for name in KINDS}
        for user in users:
            counts[user.kind] += 1
        endpoints = 0
        for user in users:
            if user.kind == "network":
                _, name = user.key.split(":")
                oper = await self.network_oper(tenant.tenantName, name)
                endpoints += oper.allocatedAddressesCount
        return TenantOper(
            totalNetworks=counts["network"],
            totalEPGs=counts["endpointGroup"],
            totalPolicies=counts["policy"],
            totalNetprofiles=counts["netprofile"],
            totalServicelbs=counts["serviceLB"],
            totalEndpoints=endpoints,
        )

    async def network_oper(self, tenant: str, name: str) -> NetworkOper:
        network = await self.get_network(tenant, name)
        pool_kv = await self.store.get(ipam_key(tenant, name))
        pool = IntervalSet.loads(pool_kv.value if pool_kv else b"[]", "ipam")
        subnet = network.parsed_subnet()
        first, last = subnet.offset(subnet.first), subnet.offset(subnet.last)
        gateway_in_range = bool(network.gateway) and (
            first <= subnet.offset(ipaddress.IPv4Address(network.gateway)) <= last
        )
        return NetworkOper(
            pktTag=network.pktTag,
            allocatedAddressesCount=len(pool),
            availableAddressesCount=last - first + 1 - len(pool) - gateway_in_range,
        )

    async def group_oper(self, group: EndpointGroup) -> EndpointGroupOper:
        network = await self.get_object(NETWORK, group.network_key)
        users = await self.users_of(ENDPOINT_GROUP, group.key)
        return EndpointGroupOper(
            endpointGroupId=group.endpointGroupId,
            encap=network.encap.value,
            pktTag=network.pktTag,
            matchRules=[u.key for u in users if u.kind == "rule"],
        )

    async def policy_oper(self, policy: Policy) -> PolicyOper:
        users = await self.users_of(KINDS["policy"], policy.key)
        rules = [await self.get_object(RULE, u.key) for u in users if u.kind == "rule"]
        rules.sort(key=lambda r: (-r.priority, r.ruleId))
        return PolicyOper(
            rules=[r.ruleId for r in rules],
            endpointGroups=[u.key for u in users if u.kind == "endpointGroup"],
        )

    async def rule_oper(self, rule: Rule) -> RuleOper:
        group_id = 0
        if rule.match_group:
            group = await self.get_object(
                ENDPOINT_GROUP, f"{rule.tenantName}:{rule.match_group}"
            )
            group_id = group.endpointGroupId
        return RuleOper(matchEndpointGroupId=group_id)

    async def netprofile_oper(self, profile: Netprofile) -> NetprofileOper:
        users = await self.users_of(KINDS["netprofile"], profile.key)
        return NetprofileOper(
            bandwidthBitsPerSecond=bandwidth_bps(profile.bandwidth),
            endpointGroups=[u.key for u in users if u.kind == "endpointGroup"],
        )

    async def service_oper(self, service: ServiceLB) -> ServiceLBOper:
        network = await self.get_object(NETWORK, service.network_key)
        return ServiceLBOper(serviceVip=service.ipAddress, pktTag=network.pktTag)

    async def endpoint_oper(self, endpoint_id: str) -> EndpointOper:
        endpoint = await self.endpoints.get(endpoint_id)
        host = await self.store.get(host_key(endpoint.host))
        return EndpointOper(
            endpointID=endpoint.endpointID,
            containerID=endpoint.containerID,
            intfName=endpoint.ifname,
            homingHost=endpoint.host,
            vtepIP=decode(Host, host).vtepIP if host else "",
            network=f"{endpoint.tenantName}:{endpoint.networkName}",
            ipAddress=[f"{endpoint.ipAddress}/{endpoint.prefixLen}"]
            + (
                [f"{endpoint.ipv6Address}/{endpoint.ipv6PrefixLen}"]
                if endpoint.ipv6Address
                else []
            ),
            macAddress=endpoint.macAddress,
            encap=endpoint.encap.value,
            pktTag=endpoint.pktTag,
        )

    # -- the calls netmaster's first version offered ----------------------------

    async def put_tenant(self, tenant: Tenant) -> Tenant:
        return await self.put_object(TENANT, tenant)

    async def get_tenant(self, name: str) -> Tenant:
        return await self.get_object(TENANT, name)

    async def list_tenants(self) -> list[Tenant]:
        return await self.list_objects(TENANT)

    async def delete_tenant(self, name: str) -> None:
        await self.delete_object(TENANT, name)

    async def put_network(self, network: Network) -> Network:
        return await self.put_object(NETWORK, network)

    async def get_network(self, tenant: str, name: str) -> Network:
        return await self.get_object(NETWORK, f"{tenant}:{name}")

    async def list_networks(self) -> list[Network]:
        return await self.list_objects(NETWORK)

    async def delete_network(self, tenant: str, name: str) -> None:
        await self.delete_object(NETWORK, f"{tenant}:{name}")

    async def put_host(self, host: Host) -> Host:
        return await self.put_object(HOST, host)

    async def get_host(self, name: str) -> Host:
        return await self.get_object(HOST, name)

    async def list_hosts(self) -> list[Host]:
        return await self.list_objects(HOST)

    async def delete_host(self, name: str) -> None:
        await self.delete_object(HOST, name)


# -- per-kind rules -------------------------------------------------------------


async def _sibling_records(
    plan: Plan, target: Link, kind: Kind[M], me: Link
) -> list[M]:
    """The objects of ``kind`` referring to ``target``, other than ``me``.

    Peeked, not pinned: ``target``'s reverse-index entry is pinned and every
    plan that adds, removes or changes such a sibling rewrites it.
    """
    siblings = []
    for user in await plan.users(target):
        if user.kind == kind.name and user != me:
            kv = await plan.peek(kind.record_key(user.key))
            if kv is not None:
                siblings.append(decode(kind.model, kv))
    return siblings


async def _endpoints_on(
    plan: Plan, state: State, tenant: str, network: str, group: str | None = None
) -> list[str]:
    """Endpoints on a network (and in ``group``), as ``endpoint <id>``.

    Endpoints are not in the reverse index; the network's address pool stands
    in for them. It is pinned, and every endpoint create rewrites it, so no
    endpoint can appear between this scan and the caller's commit.
    """
    addresses = await plan.read(ipam_key(tenant, network))
    if addresses.value in (None, b"[]"):
        return []
    return [
        f"endpoint {ep.endpointID}"
        for ep in await state.endpoints.list()
        if (ep.tenantName, ep.networkName) == (tenant, network)
        and (group is None or ep.endpointGroup == group)
    ]


class NetworkHandler(Handler[Network]):
    """A network's pktTag comes from the global ranges; its address pool is
    created and removed with it, and holds it while endpoints use it."""

    async def prepare(self, plan: Plan, old: Network | None, new: Network) -> Network:
        if old is not None:
            return self._same_network(old, new)
        settings = await self.state.global_in(plan)
        me = Link("network", new.key)
        mine = new.parsed_subnet().network
        for other in await _sibling_records(
            plan, Link("tenant", new.tenantName), NETWORK, me
        ):
            if mine.overlaps(other.parsed_subnet().network):
                raise ConflictError(
                    f"subnet {new.subnet} overlaps {other.subnet} of network "
                    f"{other.key}; networks of one tenant need disjoint subnets"
                )
            if (
                new.ipv6Subnet
                and other.ipv6Subnet
                and ipaddress.IPv6Network(new.ipv6Subnet).overlaps(
                    ipaddress.IPv6Network(other.ipv6Subnet)
                )
            ):
                raise ConflictError(
                    f"ipv6Subnet {new.ipv6Subnet} overlaps {other.ipv6Subnet} of "
                    f"network {other.key}; networks of one tenant need disjoint subnets"
                )

        tags = await plan.read(tag_pool_key(new.encap))
        pool = IntervalSet.loads(tags.value or b"[]", tags.key)
        tag = self._pick_tag(new, pool, settings)
        pool.add(tag)
        plan.put(tags.key, pool.dumps())
        plan.put(ipam_key(new.tenantName, new.networkName), b"[]")
        return new.model_copy(update={"pktTag": tag})

    @staticmethod
    def _same_network(existing: Network, wanted: Network) -> Network:
        # A network's addressing cannot change under its endpoints; a repeated
        # create with the same content is accepted (PUT is create-or-update).
        compared = wanted.model_copy(
            update={"pktTag": wanted.pktTag or existing.pktTag}
        )
        if compared != existing:
            raise AlreadyExistsError(
                "network",
                existing.key,
                "encap, pktTag, subnet and gateway cannot change; delete and recreate it",
            )
        return existing

    @staticmethod
    def _pick_tag(network: Network, pool: IntervalSet, settings: Global) -> int:
        encap = network.encap
        low, high = (
            settings.vlan_range() if encap is Encap.VLAN else settings.vxlan_range()
        )
        if network.pktTag:
            if not low <= network.pktTag <= high:
                raise ValidationError(
                    "pktTag",
                    network.pktTag,
                    f"a {encap} tag inside the global {encap}s range {low}-{high} "
                    "(or 0 to have one allocated)",
                )
            if network.pktTag in pool:
                raise ConflictError(
                    f"pktTag {network.pktTag} is already used by another {encap} "
                    "network; choose another or omit it to have one allocated"
                )
            return network.pktTag
        tag = pool.lowest_free(low, high)
        if tag is None:
            raise ExhaustedError(f"{encap} range {low}-{high}", "global")
        return tag

    async def users(self, plan: Plan, obj: Network) -> list[str]:
        return await _endpoints_on(plan, self.state, obj.tenantName, obj.networkName)

    async def release(self, plan: Plan, obj: Network) -> None:
        tags = await plan.read(tag_pool_key(obj.encap))
        pool = IntervalSet.loads(tags.value or b"[]", tags.key)
        pool.discard(obj.pktTag)
        plan.put(tags.key, pool.dumps())
        plan.delete(ipam_key(obj.tenantName, obj.networkName))

    def lock(self, key: str) -> AbstractAsyncContextManager[object]:
        # Endpoint creation on this network queues on the same lock, so a
        # delete does not keep losing compare-and-swaps to a stream of creates.
        tenant, name = NETWORK.split(key)
        return self.state.endpoints.lock(tenant, name)


class GroupHandler(Handler[EndpointGroup]):
    """Group ids come from a persisted pool; ``ipPool`` lies inside the network."""

    async def prepare(
        self, plan: Plan, old: EndpointGroup | None, new: EndpointGroup
    ) -> EndpointGroup:
        assigned = old.endpointGroupId if old is not None else 0
        if new.endpointGroupId not in (0, assigned):
            raise ValidationError(
                "endpointGroupId",
                new.endpointGroupId,
                f"{assigned} or absent: netmaster assigns group ids"
                if assigned
                else "absent (or 0): netmaster assigns group ids",
            )
        if old is not None and old.networkName != new.networkName:
            raise ConflictError(
                f"endpointGroup {old.key} is on network {old.networkName}; a group "
                "cannot move to another network: delete and recreate it"
            )
        if old is None or old.ipPool != new.ipPool:
            await self._check_pool(plan, new)

        if old is None:
            ids = await plan.read(group_id_pool_key())
            pool = IntervalSet.loads(ids.value or b"[]", ids.key)
            assigned = pool.lowest_free(*GROUP_ID_RANGE) or 0
            if not assigned:
                raise ExhaustedError("endpoint group ids", "global")
            pool.add(assigned)
            plan.put(ids.key, pool.dumps())
        return new.model_copy(update={"endpointGroupId": assigned})

    async def _check_pool(self, plan: Plan, group: EndpointGroup) -> None:
        network_link = Link("network", group.network_key)
        # Rewritten even when unchanged: concurrent pool changes on this
        # network then conflict, so two groups never claim overlapping pools.
        await plan.touch_users(network_link)
        wanted = group.pool()
        if wanted is None:
            return
        read = await plan.read(NETWORK.record_key(group.network_key))
        if read.kv is None:  # checked by the engine already; kept for mypy
            raise NotFoundError("network", group.network_key)
        subnet = decode(Network, read.kv).parsed_subnet()
        first, last = wanted
        if not (subnet.first <= first and last <= subnet.last):
            raise ValidationError(
                "ipPool",
                group.ipPool,
                f"a range inside {subnet.first}-{subnet.last}, the addresses of "
                f"network {group.network_key}",
            )
        me = Link("endpointGroup", group.key)
        for other in await _sibling_records(plan, network_link, ENDPOINT_GROUP, me):
            theirs = other.pool()
            if theirs is not None and first <= theirs[1] and theirs[0] <= last:
                raise ConflictError(
                    f"ipPool {group.ipPool} overlaps {other.ipPool} of endpointGroup "
                    f"{other.key} on the same network; pools must be disjoint"
                )

    async def users(self, plan: Plan, obj: EndpointGroup) -> list[str]:
        return await _endpoints_on(
            plan, self.state, obj.tenantName, obj.networkName, obj.groupName
        )

    async def release(self, plan: Plan, obj: EndpointGroup) -> None:
        ids = await plan.read(group_id_pool_key())
        pool = IntervalSet.loads(ids.value or b"[]", ids.key)
        pool.discard(obj.endpointGroupId)
        plan.put(ids.key, pool.dumps())


class ServiceHandler(Handler[ServiceLB]):
    """A service's VIP is a host address of its network, unique on it."""

    async def prepare(
        self, plan: Plan, old: ServiceLB | None, new: ServiceLB
    ) -> ServiceLB:
        moved = old is None or (old.ipAddress, old.networkName) != (
            new.ipAddress,
            new.networkName,
        )
        if not new.ipAddress or not moved:
            return new
        network_link = Link("network", new.network_key)
        await plan.touch_users(network_link)
        read = await plan.read(NETWORK.record_key(new.network_key))
        if read.kv is None:  # checked by the engine already; kept for mypy
            raise NotFoundError("network", new.network_key)
        network = decode(Network, read.kv)
        subnet = network.parsed_subnet().network
        vip = ipaddress.IPv4Address(new.ipAddress)
        if (
            vip not in subnet
            or vip in (subnet.network_address, subnet.broadcast_address)
            or new.ipAddress == network.gateway
        ):
            raise ValidationError(
                "ipAddress",
                new.ipAddress,
                f"a host address of {subnet} (network {network.key}) other than "
                "its gateway",
            )
        # The allocator writes this pool with every endpoint, so reading it here
        # (the plan compares its revision) keeps a VIP off an endpoint's address.
        addresses = await plan.read(ipam_key(network.tenantName, network.networkName))
        held = IntervalSet.loads(addresses.value or b"[]", addresses.key)
        if network.parsed_subnet().offset(vip) in held:
            raise ConflictError(
                f"ipAddress {new.ipAddress} is held by an endpoint of network "
                f"{network.key}; choose a free address for the VIP"
            )
        me = Link("serviceLB", new.key)
        for other in await _sibling_records(plan, network_link, KINDS["serviceLB"], me):
            if other.ipAddress == new.ipAddress:
                raise ConflictError(
                    f"ipAddress {new.ipAddress} is already the VIP of serviceLB "
                    f"{other.key}"
                )
        return new
