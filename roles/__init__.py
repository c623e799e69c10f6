"""Roles: the one registry of what each kind of agent claims and produces; each has its program in roles/<role>.md.

May import agents, the blackboard, the ground and the harness; never the face (swarm's CLI, up, head, node).
"""

from __future__ import annotations

from agents.runtime import Role
from roles.ideator import Ideator
from roles.implementer import Implementer
from roles.replicator import Replicator
from roles.reviewer import Reviewer

ROLES: dict[str, type[Role]] = {role.name: role for role in (Ideator, Implementer, Reviewer, Replicator)}
DEVICE_ROLES = ("implementer", "replicator")
