"""Roles: the one registry of what each kind of agent claims and produces; each has its program in roles/<role>.md.

May import agents, the blackboard, the ground and the harness; never the face (swarm's CLI, up, head, node).
`ROLES` is the one registry: the face looks a role up here by name and hands the class to the
runtime, and every list of role names (the CLI's choices, a node's plan) is read from it, in this
order. What a role needs (a brain, a device) is said by its class.
"""

from __future__ import annotations

from agents.runtime import Role
from roles.ideator import Ideator
from roles.implementer import Implementer
from roles.replicator import Replicator
from roles.reviewer import Reviewer

ROLES: dict[str, type[Role]] = {role.name: role for role in (Ideator, Implementer, Reviewer, Replicator)}
