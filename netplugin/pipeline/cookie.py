"""Flow cookies: which restart round and which feature object installed a flow.

    bits 63..48  round    raised on every agent start; flows of older rounds are
                          removed once the new round is installed (no flush, so
                          traffic never stops during an agent restart)
    bits 47..40  feature  Feature below
    bits 39..0   object   per-feature id of the object (endpoint, network, host)

Deleting with the mask FEATURE_MASK | OBJECT_MASK removes one object's flows
whatever round installed them.
"""

from __future__ import annotations

from enum import IntEnum

ROUND_SHIFT = 48
FEATURE_SHIFT = 40
ROUND_MASK = 0xFFFF << ROUND_SHIFT
FEATURE_MASK = 0xFF << FEATURE_SHIFT
OBJECT_MASK = (1 << FEATURE_SHIFT) - 1
MAX_ROUND = 0xFFFF


class Feature(IntEnum):
    PIPELINE = 1  # table defaults
    NETWORK = 2  # per network: classification of uplink/tunnel traffic, gateway
    LOCAL_ENDPOINT = 3  # per endpoint on this host
    REMOTE_ENDPOINT = 4  # per endpoint on another host


def make(round_: int, feature: Feature, obj: int) -> int:
    if not 0 < round_ <= MAX_ROUND or not 0 <= obj <= OBJECT_MASK:
        raise ValueError(f"cookie out of range round={round_} object={obj}")
    return round_ << ROUND_SHIFT | int(feature) << FEATURE_SHIFT | obj


def round_of(cookie: int) -> int:
    return cookie >> ROUND_SHIFT


def next_round(previous: int) -> int:
    """Rounds count 1..MAX_ROUND and wrap; 0 never appears in a cookie."""
    return previous % MAX_ROUND + 1


class ObjectIds:
    """Small per-feature ids for object keys, stable for the agent's lifetime."""

    def __init__(self) -> None:
        self._ids: dict[tuple[Feature, str], int] = {}
        self._next: dict[Feature, int] = {}

    def get(self, feature: Feature, key: str) -> int:
        ident = self._ids.get((feature, key))
        if ident is None:
            ident = self._next.get(feature, 1)
            self._next[feature] = ident + 1
            self._ids[(feature, key)] = ident
        return ident

    def peek(self, feature: Feature, key: str) -> int | None:
        """The id ``key`` has, without giving it one."""
        return self._ids.get((feature, key))

    def forget(self, feature: Feature, key: str) -> None:
        self._ids.pop((feature, key), None)
