"""The object kinds netmaster serves, what each refers to, and the reverse index.

Every kind declares its REST collection (and the spellings Contiv clients
use), its key fields, where its records live and its ``links``: the objects
it needs to exist, its parent first (a group needs its tenant, network,
policies and profile). For every link, ``refs/<kind>/<key>`` lists the
objects referring to it, so "may this be deleted?" is one read.

``Plan`` is one optimistic attempt at a change: every record it reads is
pinned by a compare, its writes (records and reverse-index entries) commit
together or not at all. Creating a group therefore writes the policy's
reverse-index entry that deleting the policy must find empty: of two such
requests racing, one commit fails its compare and is retried against the
other's result, and no reference ever dangles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from api.errors import ConflictError, StoreError, ValidationError
from api.models import NAME_FORM, NAME_PATTERN, Host, Network, Tenant
from api.objects import (
    EndpointGroup,
    Global,
    Netprofile,
    Policy,
    Rule,
    ServiceLB,
)
from netmaster.keys import object_key, refs_key
from netmaster.store.base import Delete, KeyValue, Put
from netmaster.store.keyspace import MAX_TXN_OPS
from netmaster.txn import Read, Transactions

M = TypeVar("M", bound=BaseModel)

_NAME_RE = re.compile(NAME_PATTERN)

#: Compares a leader fence may add to a commit; a plan keeps room for them.
FENCE_ALLOWANCE = 8


@dataclass(frozen=True, slots=True)
class Link:
    """A reference from one object to another: ``network t1:web``.

    ``field`` says which field of the referring object names it; it is for
    messages only and takes no part in equality.
    """

    kind: str
    key: str
    field: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"

    @classmethod
    def parse(cls, text: str) -> Link:
        kind, _, key = text.partition(" ")
        return cls(kind, key)


@dataclass(frozen=True, slots=True)
class Kind(Generic[M]):
    """One object kind: its names, key, storage and references."""

    #: Contiv's object name (``endpointGroup``), also the kind in refs and errors.
    name: str
    #: The REST collection under ``/api/v1/``.
    plural: str
    #: Other collection spellings accepted (Contiv's ``policys``).
    aliases: tuple[str, ...]
    model: type[M]
    key_fields: tuple[str, ...]
    #: How the key reads in messages: ``tenant:group``.
    key_form: str
    directory: str
    links: Callable[[M], list[Link]]
    #: Kinds of referring object deleted along with this one (a policy's rules);
    #: any other referring object refuses the delete.
    cascade: tuple[str, ...] = ()

    def key_of(self, obj: M) -> str:
        return ":".join(str(getattr(obj, f)) for f in self.key_fields)

    def split(self, key: str) -> list[str]:
        """The key's parts; ValidationError unless it is ``key_form`` of names."""
        parts = key.split(":")
        if len(parts) != len(self.key_fields) or not all(
            _NAME_RE.match(p) for p in parts
        ):
            raise ValidationError(
                "key",
                key,
                f"{self.key_form}, each part {NAME_FORM}",
            )
        return parts

    def record_key(self, key: str) -> str:
        return object_key(self.directory, self.split(key))

    def prefix(self) -> str:
        return object_key(self.directory, [""])

    def check_body(self, obj: M, key: str) -> None:
        """The body must name the object the URL names."""
        for name, part in zip(self.key_fields, self.split(key), strict=True):
            value = getattr(obj, name)
            if value != part:
                raise ValidationError(name, value, f"{part!r} as named in the URL")

    def user(self, obj: M) -> Link:
        return Link(self.name, self.key_of(obj))


def _tenant_link(obj: Any) -> Link:
    return Link("tenant", obj.tenantName, "tenantName")


def _group_links(group: EndpointGroup) -> list[Link]:
    t = group.tenantName
    links = [_tenant_link(group), Link("network", group.network_key, "networkName")]
    links += [Link("policy", f"{t}:{p}", "policies") for p in group.policies]
    if group.netProfile:
        links.append(Link("netprofile", f"{t}:{group.netProfile}", "netProfile"))
    return links


def _rule_links(rule: Rule) -> list[Link]:
    t = rule.tenantName
    links = [Link("policy", rule.policy_key, "policyName")]
    for attr in ("fromEndpointGroup", "toEndpointGroup"):
        if getattr(rule, attr):
            links.append(Link("endpointGroup", f"{t}:{getattr(rule, attr)}", attr))
    for attr in ("fromNetwork", "toNetwork"):
        if getattr(rule, attr):
            links.append(Link("network", f"{t}:{getattr(rule, attr)}", attr))
    return links


def _no_links(obj: Any) -> list[Link]:
    return []


TENANT = Kind(
    "tenant", "tenants", (), Tenant, ("tenantName",), "tenant", "tenants", _no_links
)
NETWORK = Kind(
    "network",
    "networks",
    (),
    Network,
    ("tenantName", "networkName"),
    "tenant:network",
    "networks",
    lambda n: [_tenant_link(n)],
)
GLOBAL = Kind(
    "global", "globals", (), Global, ("name",), "global", "globals", _no_links
)
ENDPOINT_GROUP = Kind(
    "endpointGroup",
    "endpointGroups",
    (),
    EndpointGroup,
    ("tenantName", "groupName"),
    "tenant:group",
    "endpointGroups",
    _group_links,
)
POLICY = Kind(
    "policy",
    "policies",
    ("policys",),
    Policy,
    ("tenantName", "policyName"),
    "tenant:policy",
    "policies",
    lambda p: [_tenant_link(p)],
    cascade=("rule",),
)
RULE = Kind(
    "rule",
    "rules",
    (),
    Rule,
    ("tenantName", "policyName", "ruleId"),
    "tenant:policy:ruleId",
    "rules",
    _rule_links,
)
NETPROFILE = Kind(
    "netprofile",
    "netprofiles",
    (),
    Netprofile,
    ("tenantName", "profileName"),
    "tenant:profile",
    "netprofiles",
    lambda p: [_tenant_link(p)],
)
SERVICE_LB = Kind(
    "serviceLB",
    "serviceLBs",
    (),
    ServiceLB,
    ("tenantName", "serviceName"),
    "tenant:service",
    "serviceLBs",
    lambda s: [_tenant_link(s), Link("network", s.network_key, "networkName")],
)
HOST = Kind("host", "hosts", (), Host, ("hostName",), "host", "hosts", _no_links)

#: Every kind by name, in the order a tenant's contents are reported.
KINDS: dict[str, Kind[Any]] = {
    k.name: k
    for k in (
        TENANT,
        NETWORK,
        ENDPOINT_GROUP,
        POLICY,
        RULE,
        NETPROFILE,
        SERVICE_LB,
        GLOBAL,
        HOST,
    )
}


class Plan:
    """One attempt at a change: pinned reads, reverse-index edits and writes.

    ``read`` pins a key (its compare joins the commit); ``peek`` does not and
    is for records another pinned key already guards (a tenant's networks are
    guarded by the tenant's reverse-index entry, which every network create
    and delete rewrites). Writes to one key replace each other.
    """

    def __init__(self, txn: Transactions, what: str) -> None:
        self.txn = txn
        self.what = what
        self._reads: dict[str, Read] = {}
        self._ops: dict[str, Put | Delete] = {}
        self._refs: dict[str, set[str]] = {}
        self._dirty_refs: set[str] = set()

    async def read(self, key: str) -> Read:
        if key not in self._reads:
            self._reads[key] = await self.txn.read(key)
        return self._reads[key]

    async def peek(self, key: str) -> KeyValue | None:
        if key in self._reads:
            return self._reads[key].kv
        return await self.txn.store.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._ops[key] = Put(key, value)

    def delete(self, key: str) -> None:
        self._ops[key] = Delete(key)

    @property
    def writes(self) -> bool:
        return bool(self._ops or self._dirty_refs)

    # -- the reverse index ----------------------------------------------------

    async def users(self, target: Link) -> list[Link]:
        """Who refers to ``target``, as this plan will leave it."""
        return [Link.parse(u) for u in sorted(await self._users(target))]

    async def _users(self, target: Link) -> set[str]:
        key = refs_key(target.kind, target.key)
        if key not in self._refs:
            read = await self.read(key)
            try:
                self._refs[key] = set(json.loads(read.value or b"[]"))
            except ValueError as exc:
                raise StoreError(f"record {key!r} is corrupt: {exc}") from exc
        return self._refs[key]

    async def add_user(self, target: Link, user: Link) -> None:
        users = await self._users(target)
        if str(user) not in users:
            users.add(str(user))
            self._dirty_refs.add(refs_key(target.kind, target.key))

    async def remove_user(self, target: Link, user: Link) -> None:
        users = await self._users(target)
        if str(user) in users:
            users.discard(str(user))
            self._dirty_refs.add(refs_key(target.kind, target.key))

    async def touch_users(self, target: Link) -> None:
        """Rewrite ``target``'s entry unchanged, so concurrent plans that read
        it (to check siblings, say) conflict with this one."""
        await self._users(target)
        self._dirty_refs.add(refs_key(target.kind, target.key))

    async def forget(self, target: Link) -> None:
        """Drop ``target``'s entry with it (it must have no users left)."""
        await self._users(target)
        self._refs[refs_key(target.kind, target.key)] = set()
        self._dirty_refs.add(refs_key(target.kind, target.key))

    # -- commit ---------------------------------------------------------------

    async def commit(self) -> int:
        """Write everything if nothing read has changed; TxnConflict otherwise."""
        for key in self._dirty_refs:
            users = sorted(self._refs[key])
            if users:
                self.put(key, json.dumps(users).encode())
            elif self._reads[key].kv is not None:
                self.delete(key)
        compares = [r.compare for r in self._reads.values()]
        ops = list(self._ops.values())
        limit = MAX_TXN_OPS - FENCE_ALLOWANCE
        if len(compares) > limit or len(ops) > limit:
            raise ConflictError(
                f"{self.what} would read {len(compares)} and write {len(ops)} "
                f"records at once, more than one store transaction holds ({limit}); "
                "split the change (fewer references or rules per request)"
            )
        return await self.txn.commit(compares, ops)
