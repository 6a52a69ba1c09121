"""The decisions both executors share around a script call (repocket.io.common), without a server.

A script call is only sent again when it is known not to have run; everything
else reaches the caller as repocket's error. The functional tests (cluster,
Sentinel, replication) check the same decisions against real servers.
"""

from __future__ import annotations

import pytest
from redis.exceptions import AskError, MovedError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisPyConnectionError

from repocket import errors
from repocket.connections import WritePolicy
from repocket.io.common import (
    MAX_REDIRECTS,
    Demoted,
    NotSent,
    ScriptRetries,
    check_replicas,
    redirection,
    refused_as_replica,
    slot_groups,
)
from repocket.plan.rounds import Eval, Pipeline, command

STEP = Eval("write", ["{repocket:app:Thing:0}:abc", "{repocket:app:Thing:0}:_lease:abc"], [], "app.Thing")
POLICY = WritePolicy(replicas=0, timeout_ms=1000, failover_seconds=5.0)


def _retries(cluster: bool = True, sentinel: bool = False, policy: WritePolicy = POLICY) -> ScriptRetries:
    return ScriptRetries(policy, STEP, cluster, sentinel)


def test_moved_refreshes_the_slots_and_calls_again_at_once() -> None:
    retries = _retries()
    assert retries.after(MovedError("1234 127.0.0.1:7001")) == 0.0
    assert retries.refresh and retries.ask is None


def test_ask_calls_the_node_it_names_once_and_then_the_owner_again() -> None:
    retries = _retries()
    assert retries.after(AskError("1234 127.0.0.1:7002")) == 0.0
    assert retries.ask == ("127.0.0.1", 7002) and not retries.refresh
    retries.after(TryAgainError("Multiple keys request during rehashing of slot"))
    assert retries.ask is None


def test_redirections_are_followed_a_bounded_number_of_times() -> None:
    retries = _retries()
    for _ in range(MAX_REDIRECTS):
        retries.after(MovedError("1 127.0.0.1:7001"))
    with pytest.raises(errors.RepocketError, match="app.Thing"):
        retries.after(MovedError("1 127.0.0.1:7001"))


def test_redirections_are_errors_off_a_cluster() -> None:
    with pytest.raises(errors.RepocketError):
        _retries(cluster=False).after(MovedError("1 127.0.0.1:7001"))


@pytest.mark.parametrize("exc", [Demoted(), TryAgainError("busy"), NotSent(), RedisPyConnectionError("refused")])
def test_a_call_that_did_not_run_waits_growing_pauses_within_the_budget(exc: BaseException) -> None:
    retries = _retries(sentinel=isinstance(exc, Demoted))
    pauses = [retries.after(exc) for _ in range(5)]
    assert pauses == sorted(pauses) and 0 < pauses[0] < pauses[-1] <= 1.0


def test_the_budget_spent_raises_saying_nothing_was_written() -> None:
    retries = _retries(policy=WritePolicy(failover_seconds=0.0))
    with pytest.raises(errors.RedisConnectionError, match=r"app.Thing .*nothing was written"):
        retries.after(Demoted())


def test_a_send_that_failed_on_one_server_raises_at_once_saying_nothing_was_written() -> None:
    exc = NotSent()
    exc.__cause__ = RedisPyConnectionError("Connection refused")
    with pytest.raises(errors.RedisConnectionError, match="could not send the write.*nothing was written"):
        _retries(cluster=False).after(exc)


def test_any_other_refusal_is_the_callers_error_naming_the_model_and_key() -> None:
    with pytest.raises(errors.RepocketError, match=r"app.Thing.*\{repocket:app:Thing:0\}:abc"):
        _retries().after(ResponseError("ERR something else"))


def test_readonly_is_recognised_alone_inside_a_script_and_as_sentinel_reports_it() -> None:
    assert refused_as_replica(ReadOnlyError("You can't write against a read only replica."))
    assert refused_as_replica(ResponseError(
        "Error running script (call to f_1): @user_script:3: -READONLY You can't write against a read only replica."))
    try:
        try:
            raise ReadOnlyError("READONLY")
        except ReadOnlyError:
            raise RedisPyConnectionError("The previous master is now a slave") from None
    except RedisPyConnectionError as exc:
        wrapped = exc
    assert refused_as_replica(wrapped)
    assert not refused_as_replica(RedisPyConnectionError("Connection reset by peer"))
    assert not refused_as_replica(ResponseError("ERR unknown command"))


def test_redirection_reads_moved_and_ask() -> None:
    assert redirection(MovedError("5 10.0.0.1:7000")) == ("MOVED", "10.0.0.1", 7000)
    assert redirection(AskError("5 10.0.0.2:7001")) == ("ASK", "10.0.0.2", 7001)
    assert redirection(ResponseError("MOVED but not parsed")) is None


def test_too_few_replicas_raise_replication_error() -> None:
    policy = WritePolicy(replicas=2, timeout_ms=50)
    check_replicas(2, policy, "app.Thing")
    with pytest.raises(errors.ReplicationError, match="1 of the 2 replicas asked for confirmed it within 50 ms"):
        check_replicas(1, policy, "app.Thing")


def test_a_transaction_is_split_by_slot_in_order() -> None:
    step = Pipeline([command("HGETALL", "a"), command("GET", "b"), command("GET", "a2")], True)
    slots = {"a": 1, "b": 2, "a2": 1}
    assert slot_groups(step, slots.__getitem__) == [[0, 2], [1]]
