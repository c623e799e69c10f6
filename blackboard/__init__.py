"""The blackboard: events on a JetStream stream, the DuckDB projection, the rules and the service that decides.

May import the ground (swarm.ground) and the harness; never agents, roles or the face.
"""
