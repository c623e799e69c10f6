"""One root for every error the swarm raises on purpose.

Outcomes of experiments are data (`harness.runner.RunResult`), never exceptions; these classes are
for misuse, bad input and broken infrastructure. Messages start with "swarm:" so a person can tell
our errors from a library's at a glance.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Root of every error raised by this project."""

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.startswith("swarm:") else f"swarm: {text}"


class ConfigError(SwarmError):
    """A setting is missing, malformed or contradicts another."""


class HarnessError(SwarmError):
    """The harness cannot do what was asked (no data, bad tier, unusable device)."""


class BusError(SwarmError):
    """NATS is unreachable, refused us, or answered with something we cannot use."""


class BoardError(SwarmError):
    """The blackboard refused a request or answered with an error."""


class ServiceUnavailable(BoardError):
    """No blackboard service answered in time (none running, or a leader handover): ask again."""


class DecodeError(SwarmError):
    """A message or event could not be decoded into a known record."""
