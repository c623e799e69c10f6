"""The bus against a real nats-server: publish once, one writer of decisions, tail, lease, requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import itertools

from swarm.ground.bus import Bus, Credentials, Envelope, SequenceConflict
from swarm.ground.constants import STREAM
from swarm.ground.errors import BoardError, BusError, BusUnavailable
from swarm.natsserver import Auth, NatsServer


_ids = itertools.count()


def joined(i: int) -> Envelope:
    """A fact: the bus carries its bytes and never looks inside."""
    return Envelope("swarm.ev.agent_joined", f"agent a{i} joined".encode(), f"fact-{i}")


def decision(by: str) -> Envelope:
    """A decision, with an id of its own each time."""
    return Envelope("swarm.dec.leader_elected", by.encode(), f"decision-{next(_ids)}")


async def collect(bus: Bus, start: int, count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    async for seq, message in bus.tail(start):
        got.append((seq, message.data))
        if len(got) == count:
            return got
    return got


async def facts_until(bus: Bus, stop: asyncio.Event) -> None:
    """Facts published one after another until `stop`: another writer interleaving with decisions."""
    i = 0
    while not stop.is_set():
        await bus.publish(joined(i))
        i += 1


async def test_a_retried_publish_is_stored_once(bus: Bus) -> None:
    event = joined(1)
    first = await bus.publish(event)
    again = await bus.publish(event)
    assert first == again == await bus.last_seq()


async def test_a_publish_that_finds_no_stream_is_retried_then_reported_as_unavailable(bus: Bus) -> None:
    """What a replicated stream answers while its servers elect a leader: nobody. That is a wait, not a crash."""
    await bus.js.delete_stream(STREAM)
    with pytest.raises(BusUnavailable, match="publish of agent_joined fact-1 failed for 1 s: nats: no response from stream"):
        await bus.publish(joined(1), timeout=1.0)
    await bus.ensure_stream()
    assert await bus.publish(joined(1)) == 1


async def test_a_stale_writer_cannot_decide(bus: Bus) -> None:
    first = await bus.publish(decision("s1"), expect_decision_seq=0)
    await bus.publish(joined(1))  # facts in between do not count against the decision sequence
    second = await bus.publish(decision("s1"), expect_decision_seq=first)
    with pytest.raises(SequenceConflict, match="wrong last sequence"):
        await bus.publish(decision("s2"), expect_decision_seq=first)
    assert await bus.last_seq() == second


async def test_a_chain_of_decisions_is_stored_back_to_back_or_not_at_all_past_a_break(tmp_path: Path) -> None:
    with NatsServer(dir=tmp_path / "nats") as server:
        writer = await Bus.connect(server.url, name="writer")
        other = await Bus.connect(server.url, name="other")
        try:
            await writer.ensure_stream()
            first = await writer.publish(decision("s1"), expect_decision_seq=0)
            assert await writer.publish_chain([decision("s1") for _ in range(3)], 0) == [None] * 3
            decided = first
            stop = asyncio.Event()
            interleaving = asyncio.create_task(facts_until(other, stop))  # another writer's, between the chains
            for _ in range(40):  # some of these chains break where a fact came between two links
                seqs = await writer.publish_chain([decision("s1") for _ in range(5)], decided)
                stored = [seq for seq in seqs if seq is not None]
                assert seqs[: len(stored)] == stored, "a link stored after one that was not"
                assert all(b == a + 1 for a, b in zip(stored, stored[1:])), "something came between two links"
                decided = stored[-1] if stored else decided
            stop.set()
            await interleaving
            assert await writer.publish_chain([decision("s1")], first) == [None], "a stale chain was stored"
        finally:
            await writer.close()
            await other.close()


async def test_an_atomic_batch_of_decisions_is_stored_whole_and_back_to_back_or_not_at_all(tmp_path: Path) -> None:
    with NatsServer(dir=tmp_path / "nats") as server:
        writer = await Bus.connect(server.url, name="writer")
        other = await Bus.connect(server.url, name="other")
        try:
            await writer.ensure_stream()
            assert await writer.stream_layout() == (1, True)
            first = await writer.publish(decision("s1"), expect_decision_seq=0)
            with pytest.raises(SequenceConflict, match="wrong last sequence"):
                await writer.publish_atomic([decision("s1") for _ in range(3)], 0)
            assert await writer.last_seq() == first, "a stale batch was stored, or part of it"
            decided, sent = first, {}
            stop = asyncio.Event()
            interleaving = asyncio.create_task(facts_until(other, stop))  # another writer's, between the batches
            for _ in range(20):
                batch = [Envelope(e.subject, e.msg_id.encode(), e.msg_id) for e in (decision("s1") for _ in range(5))]
                seqs = await writer.publish_atomic(batch, decided)
                sent.update(zip(seqs, (e.data for e in batch)))
                decided = seqs[-1]
            stop.set()
            await interleaving
            stored = dict((seq, message.data) for seq, message in await writer.stored())
            assert {seq: stored[seq] for seq in sent} == sent, "a batch is not where its acknowledgement said, in order"
        finally:
            await writer.close()
            await other.close()


async def test_an_existing_stream_is_made_to_take_atomic_batches(bus: Bus) -> None:
    config = (await bus.js.stream_info(STREAM)).config
    config.allow_atomic = False
    await bus.js.update_stream(config)
    assert await bus.stream_layout() == (1, False)
    await bus.ensure_stream()
    assert await bus.stream_layout() == (1, True)


async def test_tail_reads_in_order_from_a_sequence(bus: Bus) -> None:
    events = [joined(i) for i in range(20)]
    for event in events:
        await bus.publish(event)
    got = await asyncio.wait_for(collect(bus, 6, 15), 10)
    assert [seq for seq, _ in got] == list(range(6, 21))
    assert [data for _, data in got] == [e.data for e in events[5:]]


async def test_publishes_and_tail_survive_a_server_restart(tmp_path: Path) -> None:
    server = NatsServer(dir=tmp_path / "nats").start()
    bus = await Bus.connect(server.url, name="test")
    try:
        await bus.ensure_stream()
        await bus.publish(joined(0))
        server.kill()
        restarted = NatsServer(dir=tmp_path / "nats", port=int(server.url.rsplit(":", 1)[1]))

        async def restart_later() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(restarted.start)

        restart = asyncio.create_task(restart_later())
        seq = await bus.publish(joined(1), timeout=20)  # retried until the server is back
        await restart
        assert seq == 2 and bus.link.disconnects >= 1
        got = await asyncio.wait_for(collect(bus, 1, 2), 10)
        assert got == [(1, joined(0).data), (2, joined(1).data)]
    finally:
        await bus.close()
        server.kill()
        restarted.kill()


async def test_leader_lease_is_exclusive_and_lapses(bus: Bus) -> None:
    first, second = await bus.leader_lease(), await bus.leader_lease()
    assert await first.acquire("s1")
    assert not await second.acquire("s2")
    assert await first.refresh("s1")
    assert await first.holder() == "s1"
    # s1 stops refreshing (as a dead service would): the lease lapses and s2 takes it.
    async with asyncio.timeout(60):  # its TTL is a few seconds; a lease that never lapses fails here
        while not await second.acquire("s2"):
            await asyncio.sleep(0.25)
    assert not await first.refresh("s1"), "a holder that lost the lease must not extend it"
    await second.release()
    assert await first.holder() is None, "a released lease names no holder at once"
    async with asyncio.timeout(60):
        while not await first.acquire("s1"):
            await asyncio.sleep(0.1)


async def test_requests_get_replies_and_clear_errors(bus: Bus) -> None:
    async def echo(body: dict) -> dict:
        if body.get("fail"):
            raise BoardError("refused on purpose")
        return {"echo": body}

    stop = await bus.serve("echo", echo)
    assert await bus.request("echo", {"x": 1}) == {"echo": {"x": 1}}
    with pytest.raises(BoardError, match="refused on purpose"):
        await bus.request("echo", {"fail": True})
    reply = await bus.nc.request("swarm.req.echo", b"\xc1\x00garbage", timeout=5)
    assert b"unreadable request" in reply.data
    await stop()
    with pytest.raises(BoardError, match="no blackboard service"):
        await bus.request("echo", {"x": 1}, timeout=2)


async def test_a_server_with_auth_refuses_a_client_without_credentials(tmp_path: Path) -> None:
    with NatsServer(dir=tmp_path / "nats", auth=Auth(user="swarm", password="s3cret")) as server:
        with pytest.raises(BusError, match="cannot connect.*Authorization Violation"):
            await Bus.connect(server.url, name="intruder", wait=1)
        bus = await Bus.connect(server.url, name="member", credentials=Credentials(user="swarm", password="s3cret"))
        await bus.ensure_stream()
        assert await bus.publish(joined(1)) == 1
        await bus.close()


async def test_a_head_with_fsync_off_leaves_the_write_back_to_the_os_and_still_stores(tmp_path: Path) -> None:
    from swarm.ground.settings import NatsSettings, Settings
    from swarm.head import Head, HeadOptions

    head = Head(Settings(dir=tmp_path / "swarm", nats=NatsSettings(fsync=False)), HeadOptions())
    await asyncio.to_thread(head.start_servers)
    try:
        [server] = head.servers
        assert "sync_interval" not in (server.dir / "nats-server.conf").read_text()
        bus = await Bus.connect(server.url, name="test")
        await bus.ensure_stream()
        assert await bus.publish(joined(1)) == 1 and await bus.last_seq() == 1
        await bus.close()
    finally:
        head.stop()


def test_server_stops_cleanly_and_config_syncs_every_write(tmp_path: Path) -> None:
    server = NatsServer(dir=tmp_path / "nats")
    assert "sync_interval: always" in server.config()
    with server:
        assert server.url.startswith("nats://127.0.0.1:")
        process = server.process
    assert process is not None and process.poll() is not None
