"""Settings: frozen pydantic models read from `swarm.toml` and `SWARM_*` environment variables.

Precedence, lowest first: defaults, `swarm.toml` (in the swarm directory, else the working
directory), environment variables, then explicit overrides (the CLI's flags). A nested field is
named in the environment with a double underscore: `SWARM_BOARD__LEASE_SECONDS=30`.
No live objects live here: only values that can be printed, compared and sent to another process.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.settings import HarnessSettings
from swarm.ground.errors import ConfigError

ENV_PREFIX = "SWARM_"
FILE_NAME = "swarm.toml"


def _comma_list(value: Any) -> Any:
    """A list setting as the CLI and the environment spell it (`tiny,small`), or as given."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Credentials(Frozen):
    """How a client gets into the swarm's NATS: the one shape of them, from the settings (the same
    names under SWARM_NATS__), by a head or a join URL, to a child's environment and to the bus."""

    user: str | None = None
    password: str | None = None
    nkey_seed_file: Path | None = None  # a user nkey seed (SU...) for auth
    tls_cert: Path | None = None  # a client certificate, for servers that ask for one
    tls_key: Path | None = None
    tls_ca: Path | None = None  # the CA that signed the servers' certificates

    @classmethod
    def from_settings(cls, nats: NatsSettings) -> Credentials:
        return cls(**{name: getattr(nats, name) for name in cls.model_fields})

    def to_env(self) -> dict[str, str]:
        """As SWARM_NATS__* variables, which a child reads back into its settings (argv would show them in `ps`)."""
        return {f"{ENV_PREFIX}NATS__{name.upper()}": str(value) for name, value in self if value is not None}


class NatsSettings(Credentials):
    """Where to reach NATS, and the credentials to use (its fields are those of `Credentials`)."""

    url: str | None = None  # connect here; None: start our own nats-server
    host: str = "127.0.0.1"  # where our own server listens
    port: int = -1  # -1: a random free port
    # Our servers fsync each event before acknowledging it. False: the OS writes it back (as Optuna's
    # journal file does): nothing is lost when a process dies, the last events may be on a power cut.
    fsync: bool = True


class BoardSettings(Frozen):
    lease_seconds: float = 30.0  # a claim not renewed for this long returns to the pool
    max_claims_per_agent: int = 2  # an implementer holds the run it trains and the next it prepares
    promotion_seeds: int = 3  # K: seeds a candidate needs before it can be promoted
    min_delta: float = 0.002  # smallest val_bpb gain that counts, whatever the noise
    z: float = 2.0  # a gain must exceed z x the arena's measured seed spread
    # A candidate whose remaining seeds would have to beat its mean so far by more than this many
    # predicted spreads to promote it is decided without them (blackboard.rules.futility); 0: never.
    futility_z: float = 3.0
    max_runs: int | None = None  # stop granting device work after this many runs; None: no limit
    # The cascade: tiers from cheapest to dearest. A winner promoted on one rung is transferred to
    # the next rung's best; empty: one tier (harness.tier), no transfers.
    ladder: list[str] = []
    restack: bool = True  # re-apply a winner built on an older parent to the current best, so gains stack
    # An upper rung's baseline runs when the first winner of the rung below is promoted, so the cheap
    # rung has the devices first; False: when its arena opens (what agents.ideate_upper needs).
    lazy_upper: bool = True

    @field_validator("ladder", mode="before")
    @classmethod
    def _rungs(cls, value: Any) -> Any:
        """`tiny,small` (the CLI's and the environment's spelling) or a list; every rung a known tier, once."""
        from harness.tiers import TIERS

        rungs = _comma_list(value)
        if isinstance(rungs, list):
            unknown = [rung for rung in rungs if rung not in TIERS]
            if unknown:
                raise ValueError(f"no tier {', '.join(map(repr, unknown))}; the tiers are {', '.join(TIERS)}")
            if len(set(rungs)) != len(rungs):
                raise ValueError(f"a rung appears twice in the ladder {rungs}")
        return rungs


class BrainSettings(Frozen):
    kind: Literal["offline", "anthropic", "openai", "hybrid"] = "offline"
    model: str | None = None  # None: the provider's default (agents.brains.prices.DEFAULT_MODELS)
    # None: the model's own default. Current Claude models and OpenAI's reasoning models refuse
    # any other temperature with an HTTP 400, so it is sent only when set.
    temperature: float | None = None
    max_tokens: int = 16_000  # room for a whole train.py (~3k tokens) after the model's thinking
    base_url: str | None = None  # any OpenAI-compatible server (vLLM, Ollama, llama.cpp), or an Anthropic gateway
    budget_usd: float | None = None  # swarm-wide cap on LLM spend; None: no cap
    hybrid_share: float = Field(default=0.25, ge=0.0, le=1.0)  # hybrid: share of trials where the LLM proposes
    hybrid_llm: Literal["anthropic", "openai"] = "anthropic"  # the model behind the hybrid brain
    price_input_per_mtok: float | None = None  # USD per million input tokens, for a model not in the price table
    price_output_per_mtok: float | None = None  # and per million output tokens
    timeout_seconds: float = 600.0  # one HTTP request to the model, retries not included
    max_retries: int = 2  # the SDK's retries of rate limits (429), overload and server errors (5xx)


class AgentsSettings(Frozen):
    ideators: int | None = None  # None: one per 32 device slots (roles.ideator.Ideator.slots_per_agent)
    implementers: int | None = None  # None: one per device slot
    reviewers: int = 1
    replicators: int = 1
    ideas_ahead: int = 2  # approved ideas waiting per implementer before ideators hold back
    repair_attempts: int = 2  # an implementer repairs a crashed patch from its log at most this often
    implement_failures: int = 3  # a hypothesis whose implementation fails this often (any agent) is given up
    note_every: int = 10  # an ideator's LLM brain writes a lab-notebook note per arena every this many trials; 0: never
    ideate_upper: bool = False  # ideators also propose on the ladder's upper rungs (default: the lowest only)
    review_tiers: list[str] = []  # a reviewer takes candidates of these tiers only; empty: of every arena

    @field_validator("review_tiers", mode="before")
    @classmethod
    def _tiers(cls, value: Any) -> Any:
        return _comma_list(value)


class Settings(Frozen):
    dir: Path = Path(".swarm")  # the swarm directory: server store, projection, runs, logs
    nats: NatsSettings = NatsSettings()
    harness: HarnessSettings = HarnessSettings()
    board: BoardSettings = BoardSettings()
    brain: BrainSettings = BrainSettings()
    agents: AgentsSettings = AgentsSettings()

    @classmethod
    def load(
        cls,
        file: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Read `file` (default: ./swarm.toml if present), then the environment, then overrides.

        `overrides` uses dotted names, `{"board.lease_seconds": 10}`; None values are ignored so a
        CLI can pass every flag through unchanged.
        """
        data: dict[str, Any] = {}
        path = file if file is not None else Path(FILE_NAME)
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        elif file is not None:
            raise ConfigError(f"{path}: no such settings file")
        for key, value in (os.environ if env is None else env).items():
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            # Only names of settings: other SWARM_* variables (a run's marker, say) are not ours.
            if key.startswith(ENV_PREFIX) and dotted.split(".")[0] in cls.model_fields:
                _put(data, dotted, _env_value(value))
        for dotted, value in (overrides or {}).items():
            if value is not None:
                _put(data, dotted, value)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid settings: {exc}") from exc


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ConfigError(f"setting {dotted!r}: {name!r} is a value, not a section")
        node = child
    node[leaf] = value


def _env_value(text: str) -> Any:
    """Environment values are strings; JSON lists and objects are decoded, the rest left to pydantic."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text
