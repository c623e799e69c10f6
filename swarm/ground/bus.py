"""The bus: the one module that imports nats-py. It carries bytes; what they mean is not its business.

Connections notice a dead peer within seconds (short pings) and reconnect forever; a stored
message (an `Envelope`: subject, bytes, id) carries its id as the JetStream message id, so a
publish retried across a reconnect or a server restart is stored once. Encoding the board's events
into envelopes is the board's business (`blackboard.events.envelope`). Requests and replies are
msgpack maps; a reply is `{"ok": ...}` or `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import logging
import itertools
import json
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig

from swarm.ground.constants import (
    CONFIG_BUCKET,
    CONFIG_KEY,
    DECISIONS,
    DUPLICATE_WINDOW_SECONDS,
    LEADER_BUCKET,
    LEADER_KEY,
    LEADER_TTL_SECONDS,
    REQUEST_SECONDS,
    REQUESTS,
    SERVICE_QUEUE,
    STREAM,
    STREAM_SUBJECTS,
)
from swarm.ground.errors import BoardError, BusError, BusUnavailable, ServiceUnavailable
from swarm.ground.settings import Credentials

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code when an expected-sequence header does not hold
WRONG_LAST_MSG_ID = 10070  # ... and when an expected-last-message-id header does not hold
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Envelope(NamedTuple):
    """Something to store in the stream: where, the bytes, and the id that makes a retry a no-op."""

    subject: str
    data: bytes
    msg_id: str

    @property
    def name(self) -> str:
        """For messages to people: the subject's last token (the record's kind) and the id."""
        return f"{self.subject.rpartition('.')[2]} {self.msg_id}"


class Message(NamedTuple):
    """A message as read from the stream: its bytes, and the subject it was stored under."""

    data: bytes
    subject: str


class SequenceConflict(BusError):
    """Another writer decided since our last read: catch up, decide again."""


@dataclass
class LinkState:
    """What the connection has been through, for status views."""

    connected: bool = False
    disconnects: int = 0
    last_change: float = field(default_factory=time.time)
    last_error: str | None = None
    closing: bool = False  # we are closing it ourselves: not a disconnect worth a warning


class Bus:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.link = LinkState(connected=nc.is_connected)
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}  # publish_chain's and publish_atomic's replies by token
        self._ack_prefix: str | None = None
        self._ack_tokens = itertools.count()

    @classmethod
    async def connect(
        cls, servers: str | list[str], name: str, credentials: Credentials | None = None, wait: float = 5.0
    ) -> Bus:
        """Connect, trying for about `wait` seconds; once connected, reconnect forever."""
        creds = credentials or Credentials()
        link = LinkState()
        untrusted = asyncio.Event()

        async def disconnected() -> None:
            link.connected, link.last_change = False, time.time()
            if not link.closing:
                link.disconnects += 1
                log.warning("%s: disconnected from NATS", name)

        async def reconnected() -> None:
            link.connected, link.last_change = True, time.time()
            where = f"{nc.connected_url.hostname}:{nc.connected_url.port}" if nc.connected_url else "?"
            log.warning("%s: reconnected to NATS at %s", name, where)  # never the netloc: it holds the password

        async def error(exc: Exception) -> None:
            # What the server said (say, 'Authorization Violation') explains more than the reset after it.
            if isinstance(exc, nats.errors.Error) or link.last_error is None or "nats:" not in link.last_error:
                link.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("%s: NATS error: %s", name, link.last_error)
            if isinstance(exc, ssl.SSLCertVerificationError) and not link.connected:
                untrusted.set()  # no retry makes the certificate trusted: fail now

        options: dict[str, Any] = dict(
            servers=servers, name=name, ping_interval=2, max_outstanding_pings=2,
            allow_reconnect=True, max_reconnect_attempts=max(1, int(wait / 0.5)), reconnect_time_wait=0.5,
            connect_timeout=min(5.0, max(1.0, wait)),
            disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
        )  # fmt: skip
        if creds.user is not None:
            options.update(user=creds.user, password=creds.password or "")
        if creds.nkey_seed_file is not None:
            options["nkeys_seed"] = str(creds.nkey_seed_file)
        if creds.tls_ca is not None or creds.tls_cert is not None:
            context = ssl.create_default_context(cafile=str(creds.tls_ca) if creds.tls_ca else None)
            if creds.tls_cert is not None:
                context.load_cert_chain(str(creds.tls_cert), str(creds.tls_key) if creds.tls_key else None)
            options["tls"] = context
        try:
            # Bounded from outside as well: after a failed TLS handshake nats-py (2.16) waits forever
            # for the broken transport to close, however few attempts it was given.
            nc = await _first(nats.connect(**options), untrusted, timeout=wait + options["connect_timeout"] + 5)
        except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
            why = link.last_error or str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in why:
                why += " (the server's certificate is not trusted here: pass the CA that signed it, --tls-ca FILE)"
            raise BusError(f"cannot connect to NATS at {_safe(servers)}: {why}") from exc
        # Bounded attempts were for the first connect only: from now on a lost link is retried forever.
        nc.options["max_reconnect_attempts"] = -1
        link.last_error = None
        bus = cls(nc)
        link.connected = True
        bus.link = link
        return bus

    async def close(self) -> None:
        self.link.closing = True
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.Error, asyncio.TimeoutError):
                await self.nc.close()

    # --- the stream ---------------------------------------------------------------------------

    async def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Until JetStream answers: a fresh cluster has none until its servers elect a meta leader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.js.account_info()
                return
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise BusError(f"JetStream did not answer within {timeout:.0f} s: {exc!r}") from exc
                await asyncio.sleep(0.25)

    async def ensure_stream(self, replicas: int | None = None) -> None:
        """Create the event stream if missing; with `replicas`, also make an existing one have that many.

        Safe to call from every process: without `replicas`, an existing stream is left as it is."""
        config = StreamConfig(
            name=STREAM, subjects=list(STREAM_SUBJECTS), storage=StorageType.FILE, num_replicas=replicas or 1,
            duplicate_window=DUPLICATE_WINDOW_SECONDS, allow_msg_ttl=False, allow_atomic=True,
        )  # fmt: skip
        try:
            info = await self.js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
            return
        if replicas is not None and info.config.num_replicas != replicas:
            await self.js.update_stream(config)
        elif not info.config.allow_atomic:  # made by an earlier version: let its writer store batches at once
            config.num_replicas = info.config.num_replicas
            try:
                await self.js.update_stream(config)
            except nats.js.errors.APIError as exc:  # a server before 2.12: batches go as chains
                log.warning("the event stream cannot take atomic batches: %s", exc.description)

    async def swarm_config(self) -> dict[str, Any] | None:
        """What the head recorded for every node to agree with, or None when nothing is recorded."""
        try:
            kv = await self.js.key_value(CONFIG_BUCKET)
            entry = await kv.get(CONFIG_KEY)
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
            return None
        body = msgpack.unpackb(entry.value, raw=False) if entry.value else None
        return body if isinstance(body, dict) else None

    async def set_swarm_config(self, config: dict[str, Any], replicas: int = 1) -> None:
        """Record `config` for every node to agree with. Written as `kv.put` writes it (to the bucket's
        subject), through `publish`, whose retries also wait out a bucket just made on several servers
        until its replicas have chosen a leader."""
        try:
            await self.js.key_value(CONFIG_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            await self.js.create_key_value(KeyValueConfig(bucket=CONFIG_BUCKET, history=1, replicas=replicas))
        value = msgpack.packb(config, use_bin_type=True)
        await self.publish(Envelope(f"$KV.{CONFIG_BUCKET}.{CONFIG_KEY}", value, f"config-{uuid.uuid4().hex}"))

    async def last_seq(self) -> int:
        info = await self.js.stream_info(STREAM)
        return int(info.state.last_seq)

    async def publish(self, envelope: Envelope, expect_decision_seq: int | None = None, timeout: float = 30.0) -> int:
        """Store `envelope` once; its stream sequence. Retries through reconnects until `timeout`.

        `expect_decision_seq`: the sequence of the last decision this writer has seen; the server
        refuses the write (SequenceConflict) if any decision was stored after it.
        """
        headers = {"Nats-Msg-Id": envelope.msg_id}
        if expect_decision_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expect_decision_seq)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"{DECISIONS}.>"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                ack = await self.js.publish(envelope.subject, envelope.data, headers=headers, timeout=2.0)
                return int(ack.seq)
            except nats.js.errors.APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise SequenceConflict(f"{envelope.name}: {exc.description}") from exc
                raise BusError(f"publish of {envelope.name} refused: {exc.description}") from exc
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError, nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError) as exc:  # fmt: skip
                # NoStreamResponseError: no server holds the stream's lead yet (a replicated stream electing one).
                if time.monotonic() + delay > deadline:
                    raise BusUnavailable(f"publish of {envelope.name} failed for {timeout:.0f} s: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def publish_chain(self, envelopes: Sequence[Envelope], expect_decision_seq: int, timeout: float = 5.0) -> list[int | None]:
        """Store `envelopes` in this order, back to back, in one round trip; each one's stream sequence,
        or None where it was not stored.

        The first carries `publish`'s expected-decision-sequence guard. Each later one carries the id
        of the one before it as the stream's expected last message id: the server stores it only if
        nothing at all was stored in between, so no other writer's decision can come between two
        links, and a fact that comes between breaks the chain there (the rest is not stored).
        A single server checks each message as it stores it, in the order they arrived; a replicated
        stream checks some headers before its replicas agree, so callers chain only on a stream of
        one replica (`stream_layout`). None also when no acknowledgement came within `timeout`
        (it may be stored all the same: read the stream to know). BusError if the server refused a
        message for any other reason than a broken chain.
        """
        tokens: list[str] = []
        previous: str | None = None
        try:
            for envelope in envelopes:
                headers = {"Nats-Msg-Id": envelope.msg_id}
                if previous is None:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(expect_decision_seq)
                    headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"{DECISIONS}.>"
                else:
                    headers["Nats-Expected-Last-Msg-Id"] = previous
                token, reply_to, _ = await self._ack_slot()
                tokens.append(token)
                try:
                    await self.nc.publish(envelope.subject, envelope.data, reply=reply_to, headers=headers)
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                        nats.errors.OutboundBufferLimitError) as exc:  # fmt: skip
                    log.debug("publish_chain: %s; the rest of the chain is not sent", exc)
                    break
                previous = envelope.msg_id
            futures = [self._acks[token] for token in tokens]
            if futures:
                await asyncio.wait(futures, timeout=timeout)
        finally:
            replies = [self._acks.pop(token) for token in tokens]
        seqs: list[int | None] = []
        refused: list[str] = []
        for envelope, reply in zip(envelopes, replies + [None] * (len(envelopes) - len(replies))):
            body = reply.result() if reply is not None and reply.done() and not reply.cancelled() else {}
            error = body.get("error")
            if isinstance(error, dict) and error.get("err_code") not in (WRONG_LAST_SEQUENCE, WRONG_LAST_MSG_ID):
                refused.append(f"{envelope.name}: {error.get('description')}")
            seqs.append(int(body["seq"]) if isinstance(body.get("seq"), int) and not error else None)
        if refused:
            raise BusError(f"publish refused: {'; '.join(refused)}")
        return seqs

    async def publish_atomic(self, envelopes: Sequence[Envelope], expect_decision_seq: int, timeout: float = 5.0) -> list[int | None]:
        """Store `envelopes` in this order, back to back, all or none, in one round trip (a JetStream
        atomic batch: the stream stores it at its commit, under one lock, with one write to disk); each
        one's stream sequence, or None for all when none was stored.

        The first carries `publish`'s expected-decision-sequence guard, which the server checks at the
        commit against the stream as it is then, so no other writer's decision stored since is
        overwritten. None for all also when no acknowledgement came within `timeout` (the batch may
        be stored all the same: read the stream to know). SequenceConflict if another writer decided
        first; BusError if the server refused the batch for another reason.
        """
        if not envelopes:
            return []
        batch = uuid.uuid4().hex
        token, reply_to, future = await self._ack_slot()
        try:
            for number, envelope in enumerate(envelopes, 1):
                headers = {"Nats-Msg-Id": envelope.msg_id, "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(number)}
                if number == 1:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(expect_decision_seq)
                    headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"{DECISIONS}.>"
                reply = ""
                if number == len(envelopes):
                    headers["Nats-Batch-Commit"] = "1"
                    reply = reply_to
                try:
                    await self.nc.publish(envelope.subject, envelope.data, reply=reply, headers=headers)
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                        nats.errors.OutboundBufferLimitError) as exc:  # fmt: skip
                    log.debug("publish_atomic: %s; the batch is not committed (the server abandons it)", exc)
                    return [None] * len(envelopes)
            try:
                body = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                return [None] * len(envelopes)
        finally:
            self._acks.pop(token, None)
        error = body.get("error")
        if isinstance(error, dict):
            if error.get("err_code") == WRONG_LAST_SEQUENCE:
                raise SequenceConflict(f"batch of {len(envelopes)} from {envelopes[0].name}: {error.get('description')}")
            raise BusError(f"batch of {len(envelopes)} from {envelopes[0].name} refused: {error.get('description')}")
        last, count = body.get("seq"), body.get("count")
        if not isinstance(last, int) or count != len(envelopes):
            raise BusError(f"batch of {len(envelopes)} from {envelopes[0].name}: unexpected acknowledgement {body}")
        return list(range(last - count + 1, last + 1))

    async def _ack_slot(self) -> tuple[str, str, asyncio.Future[dict[str, Any]]]:
        """A token, the reply subject for one JetStream acknowledgement, and the future its body comes in."""
        if self._ack_prefix is None:
            self._ack_prefix = self.nc.new_inbox()
            await self.nc.subscribe(f"{self._ack_prefix}.*", cb=self._on_ack)
        token = str(next(self._ack_tokens))
        future = self._acks[token] = asyncio.get_running_loop().create_future()
        return token, f"{self._ack_prefix}.{token}", future

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return  # too late: the chain gave up on it
        try:
            body = json.loads(msg.data)
        except ValueError:
            body = None
        future.set_result(body if isinstance(body, dict) else {})

    async def stream_layout(self) -> tuple[int, bool]:
        """How many servers hold the event stream, and whether it takes atomic batches (`publish_atomic`)."""
        try:
            info = await self.js.stream_info(STREAM)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BusError(f"stream info: {type(exc).__name__}: {exc}") from exc
        return int(info.config.num_replicas or 1), bool(info.config.allow_atomic)

    async def tail(self, start_seq: int = 1) -> AsyncIterator[tuple[int, Message]]:
        """Every message of the stream from `start_seq` on, in order, forever (an ordered consumer)."""
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=10_000)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq))
        sub = await self.js.subscribe(">", stream=STREAM, ordered_consumer=True, config=config, cb=queue.put)
        try:
            while True:
                msg = await queue.get()
                yield int(msg.metadata.sequence.stream), Message(msg.data, msg.subject)
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is closing (or closed): the subscription goes with it

    # --- plain messages (not stored) ----------------------------------------------------------

    async def send(self, subject: str, body: dict[str, Any]) -> None:
        """A core NATS message: for views that a lost message does not harm (agent status)."""
        try:
            await self.nc.publish(subject, msgpack.packb(body, use_bin_type=True))
        except nats.errors.Error as exc:
            raise BusError(f"send on {subject}: {exc}") from exc

    async def listen(self, subject: str, on_message: Callable[[dict[str, Any]], None]) -> Callable[[], Awaitable[None]]:
        """Call `on_message` with each decodable map sent on `subject` (wildcards allowed); returns stop."""

        async def deliver(msg: Msg) -> None:
            try:
                body = msgpack.unpackb(msg.data, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
                return  # not ours to read: a view skips what it cannot decode
            if isinstance(body, dict):
                on_message(body)

        sub = await self.nc.subscribe(subject, cb=deliver)
        return sub.unsubscribe

    async def stored(self) -> list[tuple[int, Message]]:
        """Every message stored so far, in order (for checks and rebuilds; `tail` keeps following)."""
        last = await self.last_seq()
        found: list[tuple[int, Message]] = []
        if last:
            async for seq, message in self.tail(1):
                found.append((seq, message))
                if seq >= last:
                    break
        return found

    # --- the leader lease ----------------------------------------------------------------------

    async def leader_lease(self, replicas: int = 1) -> LeaderLease:
        try:
            kv = await self.js.key_value(LEADER_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await self.js.create_key_value(KeyValueConfig(bucket=LEADER_BUCKET, history=1, replicas=replicas))
        return LeaderLease(self.js, kv)

    # --- request / reply -------------------------------------------------------------------------

    async def request(self, verb: str, body: dict[str, Any], timeout: float = REQUEST_SECONDS) -> dict[str, Any]:
        """Ask the blackboard service; its reply body, or BoardError with the service's message."""
        try:
            msg = await self.nc.request(f"{REQUESTS}.{verb}", msgpack.packb(body, use_bin_type=True), timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise ServiceUnavailable(f"{verb}: no blackboard service is answering") from exc
        except nats.errors.TimeoutError as exc:
            raise ServiceUnavailable(f"{verb}: the blackboard service did not answer within {timeout:.0f} s") from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            raise ServiceUnavailable(f"{verb}: not connected to NATS ({type(exc).__name__})") from exc
        try:
            reply = msgpack.unpackb(msg.data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise BoardError(f"{verb}: unreadable reply: {exc}") from exc
        if not isinstance(reply, dict) or ("error" not in reply and "ok" not in reply):
            raise BoardError(f"{verb}: malformed reply")
        if "error" in reply:
            raise BoardError(f"{verb}: {reply['error']}")
        return reply["ok"]

    async def serve(self, verb: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        """Answer `verb` requests in the service queue group; returns a function that stops it.

        A handler returns the reply's body or raises BoardError, whose message the requester gets."""

        async def on_request(msg: Msg) -> None:
            try:
                body = msgpack.unpackb(msg.data, raw=False)
                if not isinstance(body, dict):
                    raise BoardError(f"{verb}: the request must be a map, not {type(body).__name__}")
                reply: dict[str, Any] = {"ok": await handler(body)}
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                reply = {"error": f"unreadable request: {exc}"}
            except BoardError as exc:
                reply = {"error": str(exc)}
            except Exception as exc:  # the service keeps serving; the requester learns what broke
                log.exception("%s: handler failed", verb)
                reply = {"error": f"internal error: {type(exc).__name__}: {exc}"}
            if msg.reply:
                try:
                    await msg.respond(msgpack.packb(reply, use_bin_type=True))
                except nats.errors.Error as exc:
                    log.warning("%s: could not reply: %s", verb, exc)

        running: set[asyncio.Task[None]] = set()

        async def dispatch(msg: Msg) -> None:
            # nats-py awaits a subscription's callbacks one at a time: a claim waiting for work
            # would hold up every request behind it. Each request gets a task of its own.
            task = asyncio.create_task(on_request(msg))
            running.add(task)
            task.add_done_callback(running.discard)

        sub = await self.nc.subscribe(f"{REQUESTS}.{verb}", queue=SERVICE_QUEUE, cb=dispatch)

        async def stop() -> None:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                raise BusError(f"stop serving {verb}: {exc}") from exc
            finally:
                for task in list(running):
                    task.cancel()

        return stop


class LeaderLease:
    """Create-if-absent with a TTL: whoever holds the key is the only writer of decisions.

    Writes go straight to the bucket's subject with an expected-sequence header and a per-message
    TTL: a holder that stops refreshing loses the key when the TTL runs out, and a refresh by a
    holder that already lost it is refused.
    """

    def __init__(self, js: Any, kv: Any) -> None:
        self.js, self.kv = js, kv
        self.subject = f"$KV.{LEADER_BUCKET}.{LEADER_KEY}"
        self.revision: int | None = None

    async def _write(self, value: str, last: int, ttl: int = LEADER_TTL_SECONDS) -> int | None:
        try:
            ack = await self.js.publish(self.subject, value.encode(), headers={
                "Nats-Expected-Last-Subject-Sequence": str(last)}, msg_ttl=ttl, timeout=2.0)  # fmt: skip
        except nats.js.errors.APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return None
            raise BusError(f"leader lease: {exc.description}") from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BusError(f"leader lease: {type(exc).__name__}: {exc}") from exc
        return int(ack.seq)

    async def acquire(self, instance: str) -> bool:
        """Take the lease if nobody holds it."""
        self.revision = await self._write(instance, 0)
        return self.revision is not None

    async def refresh(self, instance: str) -> bool:
        """Extend the lease; False if it was lost (expired and taken, or never held)."""
        if self.revision is not None:
            self.revision = await self._write(instance, self.revision)
        return self.revision is not None

    async def holder(self) -> str | None:
        try:
            entry = await self.kv.get(LEADER_KEY)
        except nats.js.errors.KeyNotFoundError:  # also KeyDeletedError
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BusError(f"leader lease: {type(exc).__name__}: {exc}") from exc
        return entry.value.decode() if entry.value else None

    async def release(self) -> None:
        """Give the lease up: it lapses within a second instead of the full TTL."""
        if self.revision is not None:
            await self._write("", self.revision, ttl=1)
            self.revision = None


def _safe(servers: str | list[str]) -> str:
    """Server URLs as a person may see them: any user and password taken out."""
    urls = servers.split(",") if isinstance(servers, str) else servers
    return ", ".join(re.sub(r"//[^@/]*@", "//", url) for url in urls)


async def _first(connecting: Awaitable[Client], failed: asyncio.Event, timeout: float) -> Client:
    """The connection, unless `failed` is set or `timeout` passes first (then asyncio.TimeoutError)."""
    attempt = asyncio.ensure_future(connecting)
    gave_up = asyncio.ensure_future(failed.wait())
    try:
        await asyncio.wait([attempt, gave_up], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gave_up.cancel()
    if attempt.done():
        return attempt.result()
    attempt.cancel()
    raise asyncio.TimeoutError()
