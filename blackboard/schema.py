"""The projection's tables: what a DuckDB file of the board holds, and how rows are keyed.

Every timestamp is a TIMESTAMP in UTC (without a time zone), taken from the events (`at`,
`expires_at`), never from the clock, so a rebuild from the stream is identical. Ids are the
events' own. `status` columns hold the life of a thing; `*_at` columns when it happened.

`events.happened_at` and `events.published_by` are the events' `at` and `by`, renamed because
`at` and `by` are keywords in DuckDB's SQL and would need quoting in every query.
"""

from __future__ import annotations

PROJECTION_VERSION = 5  # bump when a table changes: an older file is dropped and rebuilt from the stream

# Tables whose rows are updated in place, and the column that keys them.
KEYED: dict[str, str] = {
    "agents": "agent",
    "arenas": "arena",
    "hypotheses": "hypothesis",
    "work": "work",
    "claims": "claim",
    "patches": "patch",
    "runs": "run",
    "reviews": "review",
}
# Tables that only grow, one row per event, keyed by its stream sequence.
APPENDED = ("events", "parked", "bests", "replications", "usage", "notes", "leaders", "ports", "transfers", "audits")

TABLES: dict[str, str] = {
    "meta": """
        schema_version INTEGER NOT NULL,      -- PROJECTION_VERSION of the code that made the file
        last_seq BIGINT NOT NULL              -- the last stream sequence applied (or parked)
    """,
    "events": """
        seq BIGINT PRIMARY KEY,               -- stream sequence
        id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        happened_at TIMESTAMP NOT NULL,       -- the event's `at`
        published_by VARCHAR NOT NULL,        -- the event's `by`
        payload JSON NOT NULL                 -- the whole event as applied (bytes as base64, NaN as null)
    """,
    "parked": """
        seq BIGINT PRIMARY KEY,               -- a message that did not decode, kept to be looked at
        error VARCHAR NOT NULL,
        raw BLOB NOT NULL
    """,
    "agents": """
        agent VARCHAR PRIMARY KEY,
        role VARCHAR, node VARCHAR, brain VARCHAR, devices VARCHAR[], pid BIGINT,
        status VARCHAR NOT NULL,              -- active | left
        joined_at TIMESTAMP, left_at TIMESTAMP, left_reason VARCHAR
    """,
    "arenas": """
        arena VARCHAR PRIMARY KEY,            -- "<tier>/<hardware>/<fingerprint[:12]>"
        baseline_patch VARCHAR,               -- the patch holding the baseline code: root of every lineage
        fingerprint VARCHAR, tier VARCHAR, hardware VARCHAR, synthetic BOOLEAN, baseline_hash VARCHAR,
        opened_by VARCHAR, opened_at TIMESTAMP
    """,
    "hypotheses": """
        hypothesis VARCHAR PRIMARY KEY,
        arena VARCHAR,
        parent VARCHAR,                       -- the patch it builds on as proposed; NULL: the baseline
        title VARCHAR, rationale VARCHAR, intent JSON,
        idea_key VARCHAR,                     -- rules.idea_key: equal keys are the same idea
        proposed_by VARCHAR, proposed_at TIMESTAMP,
        status VARCHAR NOT NULL,              -- proposed | approved | rejected
        reason VARCHAR, duplicate_of VARCHAR, decided_at TIMESTAMP
    """,
    "work": """
        work VARCHAR PRIMARY KEY,
        work_kind VARCHAR,                    -- implement | baseline | replicate | review | promote
        arena VARCHAR,
        ref VARCHAR,                          -- hypothesis (implement) or patch (the others)
        seed BIGINT, tier VARCHAR, priority BIGINT,
        status VARCHAR NOT NULL,              -- queued | claimed | done
        claim VARCHAR,                        -- the claim holding it while claimed
        queued_at TIMESTAMP, closed_at TIMESTAMP,
        closed_by VARCHAR                     -- kind of the event that closed it
    """,
    "claims": """
        claim VARCHAR PRIMARY KEY,
        work VARCHAR, agent VARCHAR,
        granted_at TIMESTAMP, expires_at TIMESTAMP,
        status VARCHAR NOT NULL,              -- held | released | expired
        done BOOLEAN,                         -- released with its work finished
        ended_at TIMESTAMP, reason VARCHAR
    """,
    "patches": """
        patch VARCHAR PRIMARY KEY,
        arena VARCHAR, hypothesis VARCHAR, work VARCHAR,
        parent VARCHAR,                       -- the patch whose code it edits; NULL only for a baseline
        author VARCHAR, code VARCHAR, diff VARCHAR, code_hash VARCHAR,
        status VARCHAR NOT NULL,              -- submitted | accepted | refused
        reason VARCHAR, duplicate_of VARCHAR,
        submitted_at TIMESTAMP, decided_at TIMESTAMP
    """,
    "runs": """
        run VARCHAR PRIMARY KEY,
        patch VARCHAR,
        hypothesis VARCHAR, parent VARCHAR,   -- the patch's, copied here for one-table history queries
        arena VARCHAR, work VARCHAR,
        agent VARCHAR,                        -- who published the run's events
        node VARCHAR, device VARCHAR, seed BIGINT,
        purpose VARCHAR,                      -- explore | replicate | baseline | promote
        tier VARCHAR,
        status VARCHAR NOT NULL,              -- running, then ok | crash | timeout | diverged | oom | rejected | over_budget | lost
        reason VARCHAR, val_bpb DOUBLE,
        training_seconds DOUBLE, total_seconds DOUBLE, tokens BIGINT, steps BIGINT, params BIGINT,
        peak_memory_mb DOUBLE, epochs DOUBLE, tokens_per_second DOUBLE, mfu DOUBLE, cpu_seconds DOUBLE,
        sandbox VARCHAR, fingerprint VARCHAR, synthetic BOOLEAN,
        source_hash VARCHAR,                  -- sha256 of the raw code run; patches.code_hash is of the normalised code
        log_tail VARCHAR,
        started_at TIMESTAMP, finished_at TIMESTAMP,
        updated_at TIMESTAMP                  -- the latest of started_at and finished_at: history's order
    """,
    "reviews": """
        review VARCHAR PRIMARY KEY,
        patch VARCHAR, work VARCHAR, reviewer VARCHAR,
        verdict VARCHAR,                      -- approve | reject
        reasons VARCHAR[], reviewed_at TIMESTAMP
    """,
    "bests": """
        seq BIGINT PRIMARY KEY,               -- one row per promotion; an arena's best is its latest
        arena VARCHAR, patch VARCHAR, mean DOUBLE, std DOUBLE, n BIGINT,
        previous VARCHAR, previous_mean DOUBLE, threshold DOUBLE, reason VARCHAR,
        promoted_by VARCHAR, promoted_at TIMESTAMP
    """,
    "replications": """
        seq BIGINT PRIMARY KEY,               -- one row per ReplicationDone verdict
        patch VARCHAR, arena VARCHAR, n BIGINT, mean DOUBLE, std DOUBLE,
        outcome VARCHAR,                      -- promoted | not_better | rejected_in_review | awaiting_review | failed
        explanation VARCHAR, decided_at TIMESTAMP
    """,
    "ports": """
        seq BIGINT PRIMARY KEY,               -- one row per TransferPorted: a porter's re-application of a winner
        work VARCHAR, source VARCHAR, arena VARCHAR,
        patch VARCHAR,                        -- the re-applied patch; NULL: it could not be re-applied (reason)
        method VARCHAR,                       -- knobs | merge | brain
        reason VARCHAR, ported_by VARCHAR, ported_at TIMESTAMP
    """,
    "transfers": """
        seq BIGINT PRIMARY KEY,               -- one row per TransferDone: a winner re-applied to another best
        work VARCHAR, source VARCHAR,         -- the transfer work; the winner whose change it re-applied
        from_arena VARCHAR, to_arena VARCHAR,
        restack BOOLEAN,                      -- on its own rung, to the best it did not build on
        patch VARCHAR,                        -- the re-applied patch; NULL when there was none
        outcome VARCHAR,                      -- held | lost | not_transferable | failed
        reason VARCHAR,
        gain_below DOUBLE, gain_above DOUBLE, -- the winner's promotion gain; the re-applied patch's gain over the best
        decided_at TIMESTAMP
    """,
    "audits": """
        seq BIGINT PRIMARY KEY,               -- one row per AuditScored: a promoted best on the held-out audit split
        patch VARCHAR, arena VARCHAR, split VARCHAR, status VARCHAR, val_bpb DOUBLE, reason VARCHAR,
        scored_by VARCHAR, scored_at TIMESTAMP
    """,
    "usage": """
        seq BIGINT PRIMARY KEY,
        agent VARCHAR, provider VARCHAR, model VARCHAR,
        input_tokens BIGINT, output_tokens BIGINT, cost_usd DOUBLE, recorded_at TIMESTAMP
    """,
    "notes": """
        seq BIGINT PRIMARY KEY,               -- one row per lab-notebook note; an arena's latest is what ideators read
        arena VARCHAR, trials BIGINT, note VARCHAR, written_by VARCHAR, written_at TIMESTAMP
    """,
    "leaders": """
        seq BIGINT PRIMARY KEY,
        instance VARCHAR, elected_at TIMESTAMP
    """,
}

VIEWS: dict[str, str] = {
    # The current best of each arena: its latest promotion.
    "current_bests": "SELECT * FROM bests QUALIFY row_number() OVER (PARTITION BY arena ORDER BY seq DESC) = 1",
}

NAMES = frozenset(TABLES) | frozenset(VIEWS)  # what a read-only query may name


def create_statements() -> list[str]:
    """DDL that makes the schema, idempotent: safe to run on a file that already has it."""
    tables = [f"CREATE TABLE IF NOT EXISTS {name} ({columns})" for name, columns in TABLES.items()]
    views = [f"CREATE OR REPLACE VIEW {name} AS {query}" for name, query in VIEWS.items()]
    return tables + views


def drop_statements() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in VIEWS] + [f"DROP TABLE IF EXISTS {name}" for name in TABLES]
