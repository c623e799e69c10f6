"""One real sim swarm per module: first at work, then stopped (see tests.history.sim)."""

from tests.history.sim import live, stopped

__all__ = ["live", "stopped"]
