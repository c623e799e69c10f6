"""Agent processes: the runtime (claim, work, heartbeat, drain) and the brains that decide."""
