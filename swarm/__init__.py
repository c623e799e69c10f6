"""swarm: a research swarm of agent processes coordinated over NATS."""

__version__ = "0.1.0"
