"""One root for every error the swarm raises on purpose.

Outcomes of experiments are data (`harness.runner.RunResult`), never exceptions; these classes are
for misuse, bad input and broken infrastructure. A message is data, passed on as it is (a reply, a
parked event's reason); only where a person reads it does the printer add "swarm: " (`printable`),
so they can tell our errors from a library's at a glance. The harness owns its own error class.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Root of every error raised by this project."""

    @property
    def message(self) -> str:
        """The message as data: no prefix (a command that prints it adds "swarm: ")."""
        return str(self.args[0]) if self.args else ""


class ConfigError(SwarmError):
    """A setting is missing, malformed or contradicts another."""


class BusError(SwarmError):
    """NATS is unreachable, refused us, or answered with something we cannot use."""


class BusUnavailable(BusError):
    """NATS did not take a message in time (down, reconnecting, partitioned): the same message may be tried again."""


class BoardError(SwarmError):
    """The blackboard refused a request or answered with an error."""


class ServiceUnavailable(BoardError):
    """No blackboard service answered in time (none running, or a leader handover): ask again."""


class DecodeError(SwarmError):
    """A message or event could not be decoded into a known record."""


PREFIX = "swarm: "


def printable(exc: BaseException) -> str:
    """One line for a person: our errors (and the harness's) with the "swarm: " prefix."""
    return f"{PREFIX}{exc}"
