"""The harness's one error class: it imports nothing of the swarm, so it owns its errors.

Outcomes of training runs are data (`harness.runner.RunResult`), never exceptions; this class is
for misuse and missing pieces: no data, a bad tier, an unusable device. The message is data; a
caller that prints it adds its own prefix.
"""

from __future__ import annotations


class HarnessError(Exception):
    """The harness cannot do what was asked (no data, bad tier, unusable device)."""
