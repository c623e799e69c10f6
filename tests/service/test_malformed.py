"""Malformed input never stops the service: requests get an error reply, bad events are parked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blackboard.client import Board
from blackboard.events import ClaimGranted, decode, encode
from swarm.ground.errors import DecodeError
from swarm.ground.bus import Bus
from swarm.ground.constants import MAX_EVENT_BYTES, SCHEMA_VERSION
from swarm.natsserver import NatsServer
from tests.service.conftest import ARENA, ServiceProcess, hypothesis, open_arena

VERBS = ["claim", "renew", "release", "verdict", "best", "query", "history", "show", "lineage", "stats", "nonsense"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),  # not msgpack at all, mostly
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),  # msgpack, any shape
    st.fixed_dictionaries({"agent": values, "kinds": values, "arenas": values, "claims": values, "claim": values,
                           "id": values, "sql": values, "wait": st.floats(-5, 2) | st.integers(-5, 2) | values}).map(
        lambda d: msgpack.packb(d, use_bin_type=True)),
)  # fmt: skip
events = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries({"v": st.sampled_from([SCHEMA_VERSION, SCHEMA_VERSION + 1, 0, "1", None]),
                           "kind": st.sampled_from(["run_finished", "claim_granted", "hypothesis_proposed", "bogus"]) | values,
                           "id": values, "by": values, "patch": values, "val_bpb": values, "at": st.floats()}).map(
        lambda d: msgpack.packb(d, use_bin_type=True)),
)  # fmt: skip


async def exchange(url: str, verb: str, body: bytes) -> dict:
    bus = await Bus.connect(url, name="fuzz")
    try:
        reply = await bus.nc.request(f"swarm.req.{verb}", body, timeout=10)
        return msgpack.unpackb(reply.data, raw=False)
    finally:
        await bus.close()


async def publish_raw(url: str, subject: str, data: bytes) -> None:
    bus = await Bus.connect(url, name="fuzz")
    try:
        await bus.js.publish(subject, data)
    finally:
        await bus.close()


def test_malformed_requests_and_events_get_errors_and_the_service_keeps_serving(
    nats_server: NatsServer, tmp_path: Path, service_processes: list[ServiceProcess]
) -> None:
    service_processes.append(ServiceProcess(nats_server.url, tmp_path / "board.duckdb", "s1", 3.0, tmp_path / "s1.log"))
    parked = 0

    async def ready() -> None:
        bus = await Bus.connect(nats_server.url, name="setup")
        await bus.ensure_stream()
        await open_arena(Board(bus, agent="setup"))
        await Board(bus, agent="setup", retry_seconds=30).stats()
        await bus.close()

    asyncio.run(ready())

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(verb=st.sampled_from(VERBS[:-1]), body=bodies)
    def requests_get_a_reply(verb: str, body: bytes) -> None:
        reply = asyncio.run(exchange(nats_server.url, verb, body))
        assert isinstance(reply, dict) and ("ok" in reply or "error" in reply)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=events, kind=st.sampled_from(["run_finished", "x", "claim_granted"]))
    def bad_events_are_parked(data: bytes, kind: str) -> None:
        nonlocal parked
        asyncio.run(publish_raw(nats_server.url, f"swarm.ev.{kind}", data))
        try:
            decode(data, f"swarm.ev.{kind}")
        except DecodeError:
            parked += 1  # the service must park exactly these; the rest are valid events after all

    requests_get_a_reply()
    bad_events_are_parked()

    async def still_serving() -> None:
        bus = await Bus.connect(nats_server.url, name="after")
        board = Board(bus, agent="after", retry_seconds=30)
        huge = await bus.nc.request("swarm.req.query", msgpack.packb({"sql": "SELECT 1 -- " + "x" * (MAX_EVENT_BYTES * 1)}), timeout=10)
        assert msgpack.unpackb(huge.data)["ok"]["rows"] == [[1]], "a long but valid query is answered"
        assert (await board.propose(hypothesis("after the storm", LR=7))).ok
        assert await board.claim(["implement"], [ARENA], wait=10) is not None
        count = (await board.query("SELECT count(*) FROM parked"))["rows"][0][0]
        assert count == parked > 0, "every event that does not decode is parked, and nothing else"
        await bus.close()

    asyncio.run(still_serving())


@pytest.mark.parametrize("field", ["at", "expires_at"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_time_that_is_not_a_finite_number_is_refused(field: str, value: float) -> None:
    event = ClaimGranted(by="s1", claim="c-1", work="w-1", agent="a-1", expires_at=1.0)
    record = {**msgpack.unpackb(encode(event), raw=False), field: value}
    with pytest.raises(DecodeError, match=field):
        decode(msgpack.packb(record), event.subject)
