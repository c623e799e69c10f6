"""swarm: the face (CLI, up/head/join, supervisor, nats-server, status, history, reports) over the ground.

The face may import every package; nothing below imports it. `swarm.ground` is the floor everyone stands on.
"""

__version__ = "0.1.0"
