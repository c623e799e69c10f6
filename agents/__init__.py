"""Agent processes: the runtime (claim, work, heartbeat, drain; it runs any role and names none) and the brains.

May import the ground (swarm.ground), the blackboard's client and events, and the harness; never roles or the face.
"""
