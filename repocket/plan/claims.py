"""Unique values of a model spread over partitions: claims that keep them unique across partitions.

On one partition, a record's write checks and takes its unique values in the
same script call (the partition's ``_unique:<field>`` hash). Records of
different partitions live in different cluster slots, which no script call
can span, so a spread model also keeps a *claim* per unique value, in one of
``repocket.keys.CLAIM_BUCKETS`` claims hashes chosen by the value's
token: ``{<model prefix>:_claims:<bucket>}:_unique:<field>``, token ->
``"<id> <generation>"``. The protocol, for a write of record R setting value v:

1. **Claim** (``claim.lua``, in v's bucket): R takes v with a fresh random
   generation g when nobody claims it, or R does. When another record X does
   (generation h), the claim is **settled** in X's partition (``fence.lua``):
   if X's partition says X holds v, v is taken (UniqueConstraintError);
   otherwise h is revoked there, in one atomic call, so that a write of X
   still under way under h can never land, and R replaces X's claim by
   compare-and-set. Nobody held v, and nobody can come to under h.
2. **Write** (``write.lua``): R's record is written in its partition, with
   the check that g is not revoked for R (``fenced``): a write whose claim
   was taken over writes nothing, and the writer claims again.
3. **Release**: the values R held before and no longer holds are settled the
   same way and deleted by compare-and-set: a claim is deleted only once R's
   partition shows that R does not hold the value, and its generation is
   revoked first.

A writer that crashes between the steps leaves a claim nobody holds. Such a
claim blocks nobody: the next claimant settles it and takes it over, and
``check(repair=True)`` releases it. Two records can never hold one value: a
record takes v only in a write fenced on a generation that was the claim,
and a claim passes to another record only after its generation is revoked in
its holder's partition, at a moment when that partition showed the holder
without v. The cost is one claim call per unique value written, plus two
calls per value released or taken over. Planning only (see :mod:`repocket.plan`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repocket import errors, keys
from repocket.attributes import _short_repr
from repocket.options import partition_of
from repocket.plan.load import SECRET_MASK
from repocket.plan.rounds import Eval, Plan, one

if TYPE_CHECKING:
    from repocket.options import ModelOptions

__all__ = ["Claim", "claims_key", "release", "take", "wanted"]

#: How long (seconds) a claim keeps being taken over from writers that take it back.
CLAIM_BUDGET = 10.0


@dataclass(frozen=True)
class Claim:
    """Record ``pk`` claiming ``token`` (the equality token of ``value``) of unique ``field``."""

    field: str
    token: str
    pk: str
    value: Any
    generation: str


def claims_key(meta: ModelOptions, field: str, token: str) -> str:
    """The claims hash of ``token``'s bucket."""
    return keys.claims_key(meta.standalone_prefix, field, partition_of(token, keys.CLAIM_BUCKETS))


def wanted(meta: ModelOptions, instances: Iterable[Any], names: Iterable[str]) -> list[Claim]:
    """The claims a write of ``instances`` needs: each unique field of ``names`` it sets, not None.

    Two instances of the batch with one value raise UniqueConstraintError, writing nothing.
    """
    fields = [name for name in meta.unique if name in set(names)]
    out: list[Claim] = []
    seen: dict[tuple[str, str], str] = {}
    for instance in instances:
        pk = str(instance._data[meta.pk])
        for name in fields:
            value = instance._data.get(name)
            if value is None:
                continue
            token = meta.fields[name].index_token(value)
            other = seen.setdefault((name, token), pk)
            if other != pk:
                raise _taken(meta, name, value, f"is given to two records of the same batch, {other} and {pk}")
            out.append(Claim(name, token, pk, value, secrets.token_hex(8)))
    return out


def take(meta: ModelOptions, claims: Sequence[Claim]) -> Plan[None]:
    """Claim every value of ``claims`` (step 1), taking over claims nobody holds."""
    for claim in claims:
        yield from _take(meta, claim)


def _take(meta: ModelOptions, claim: Claim) -> Plan[None]:
    key = claims_key(meta, claim.field, claim.token)
    deadline = time.monotonic() + CLAIM_BUDGET
    reply = yield Eval("claim", [key], ["claim", claim.token, claim.pk, claim.generation], meta.label)
    while reply[0] != b"ok":
        _check_reply(reply)
        current = reply[1]
        if current:  # (None: released meanwhile, so the compare-and-set below expects no claim)
            holder, _, generation = current.decode().partition(" ")
            if (yield from _settle(meta, claim.field, claim.token, holder, generation)):
                raise _taken(meta, claim.field, claim.value, f"is already used by {meta.key(holder)}")
        if time.monotonic() > deadline:
            raise errors.ConflictError(f"{meta.label}.{claim.field}: for {CLAIM_BUDGET:g} s other writers kept "
                                       "taking the value; nothing was written")
        if current:
            args = ["cas", claim.token, current, claim.pk, claim.generation]
        else:
            args = ["claim", claim.token, claim.pk, claim.generation]
        reply = yield Eval("claim", [key], args, meta.label)


def _settle(meta: ModelOptions, field: str, token: str, holder: str, generation: str) -> Plan[bool]:
    """Whether ``holder`` holds ``token``, per its partition; if not, revoke ``generation`` there."""
    view = meta.for_pk(holder)
    reply = yield Eval("fence", [keys.unique_key(view.prefix, field), keys.revoked_key(view.prefix, holder)],
                       [token, holder, generation], meta.label)
    if isinstance(reply, list):
        _check_reply(reply)
    return bool(reply == b"held")


def release(meta: ModelOptions, field: str, token: str, pk: str) -> Plan[None]:
    """Delete ``pk``'s claim of ``token`` unless its partition shows that it holds the value (step 3)."""
    key = claims_key(meta, field, token)
    current = (yield one("HGET", key, token, label=meta.label))[0]
    if current is None:
        return
    holder, _, generation = current.decode().partition(" ")
    if holder != pk or (yield from _settle(meta, field, token, holder, generation)):
        return
    _check_reply((yield Eval("claim", [key], ["cas", token, current, "", ""], meta.label)))


def _check_reply(reply: list[Any]) -> None:
    if reply[0] == b"wrongtype":
        key, kind = reply[1].decode(), reply[2].decode()
        raise errors.CorruptRecordError(f"{key} is a Redis {kind}, not what repocket keeps there; "
                                        "nothing was written", key=key)


def _taken(meta: ModelOptions, field: str, value: Any, where: str) -> errors.UniqueConstraintError:
    shown = SECRET_MASK if meta.fields[field].secret else _short_repr(value)
    return errors.UniqueConstraintError(f"{meta.label}.{field}: the value {shown} {where}; nothing was written",
                                        model=meta.label, field=field, value=value)
