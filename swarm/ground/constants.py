"""Names on the wire, in one place: subjects, the stream, KV buckets, the schema version.

Facts an agent owns (its proposal, its patch, its result) go to `swarm.ev.<kind>`; decisions the
blackboard service makes (grants, verdicts, promotions) go to `swarm.dec.<kind>`, guarded by an
expected-last-sequence header over `swarm.dec.>` so that two services can never both decide.
Requests to the service go to `swarm.req.<verb>` in one queue group.
"""

from __future__ import annotations

SCHEMA_VERSION = 3  # major version of the event schema; additive changes keep it (2: RunFinished.source_hash;
# 3: ClaimGranted.releasing, which a node of 2 would ignore and so still see the released claim held)
READABLE_VERSIONS = (2, 3)  # a stream written by 2 reads the same under 3: it hands over no claim

STREAM = "SWARM"  # the JetStream stream that is the truth
FACTS = "swarm.ev"  # swarm.ev.<kind>: facts published by the agent that owns them
DECISIONS = "swarm.dec"  # swarm.dec.<kind>: decisions published by the leading service
STREAM_SUBJECTS = (f"{FACTS}.>", f"{DECISIONS}.>")
DUPLICATE_WINDOW_SECONDS = 3600  # a retried publish with the same event id within this is stored once

REQUESTS = "swarm.req"  # swarm.req.<verb>: request/reply to the blackboard service
SERVICE_QUEUE = "blackboard"  # queue group of the services that answer requests

STATUS = "swarm.status"  # swarm.status.<agent>: what an agent is doing now (core NATS, not stored)

CONFIG_BUCKET = "swarm_config"  # KV: what every node must agree with (tier, harness fingerprint)
CONFIG_KEY = "swarm"
LEADER_BUCKET = "swarm_leader"  # KV bucket holding the leader lease
LEADER_KEY = "service"
LEADER_TTL_SECONDS = 6  # whole seconds (JetStream per-message and bucket TTLs are in seconds)
REQUEST_SECONDS = 10.0  # a request's wait for its reply before the client asks again (a lost leader's requests)

MAX_EVENT_BYTES = 512 * 1024  # refuse larger events; a train.py is at most 64 KiB
