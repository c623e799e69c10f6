"""What a node runs: its plan of agents, read from the role registry; and every command reachable."""

from __future__ import annotations

import importlib
import pkgutil

import swarm.cli
from roles import ROLES
from swarm.cli import COMMANDS
from swarm.ground.settings import AgentsSettings, BoardSettings, Settings
from swarm.node import Plan, served_tiers, tier_roles


def test_a_node_gives_each_implementer_a_device_slot_and_replicators_the_last_slots_first() -> None:
    settings = Settings(agents=AgentsSettings(replicators=3))
    plan = Plan.for_devices(settings, ["cuda:0", "cuda:1"])
    assert plan.agents == [("ideator", None), ("implementer", "cuda:0"), ("implementer", "cuda:1"), ("reviewer", None),
                           ("replicator", "cuda:1"), ("replicator", "cuda:0"), ("replicator", "cuda:1")]  # fmt: skip


def test_ideators_follow_the_device_count_one_per_32_slots_unless_set() -> None:
    def ideators(slots: int, **agents: int) -> int:
        plan = Plan.for_devices(Settings(agents=AgentsSettings(**agents)), [f"sim:{i}" for i in range(slots)])
        return sum(role == "ideator" for role, _ in plan.agents)

    assert [ideators(n) for n in (1, 32, 33, 64, 65)] == [1, 1, 2, 2, 3]
    assert ideators(64, ideators=1) == 1


def test_a_node_runs_only_the_roles_asked_for_in_the_registrys_order() -> None:
    plan = Plan.for_devices(Settings(agents=AgentsSettings(implementers=1)), ["cpu"], roles=("replicator", "ideator"))
    assert plan.agents == [("ideator", None), ("replicator", "cpu")]
    assert [name for name in ROLES if ROLES[name].needs_device] == ["implementer", "replicator"]


def test_a_node_serves_the_rungs_its_devices_can_run() -> None:
    gpu_ladder = Settings(board=BoardSettings(ladder=["standard", "large"]))
    assert served_tiers(gpu_ladder, ["cuda:0"]) == ["standard", "large"]
    assert served_tiers(gpu_ladder, ["cpu"]) == []  # a GPU tier needs a GPU: join says so and names --tiers
    assert served_tiers(Settings(board=BoardSettings(ladder=["tiny", "small"])), ["cpu"]) == ["tiny", "small"]
    assert served_tiers(Settings(), ["cpu"]) == ["tiny"]  # no ladder: the swarm's one tier


def test_ideators_work_the_lowest_rung_and_one_reviewer_serves_every_arena() -> None:
    ladder = Settings(board=BoardSettings(ladder=["tiny", "small"]))
    roles = tuple(ROLES)
    assert tier_roles(ladder, "tiny", True, roles) == roles
    assert tier_roles(ladder, "small", False, roles) == ("implementer", "replicator")
    upper = ladder.model_copy(update={"agents": AgentsSettings(ideate_upper=True)})
    assert tier_roles(upper, "small", False, roles) == ("ideator", "implementer", "replicator")


def test_every_command_of_every_cli_module_is_reachable_by_its_name() -> None:
    modules = [info.name for info in pkgutil.iter_modules(swarm.cli.__path__)]
    defined = {command.name: module for module in modules for command in importlib.import_module(f"swarm.cli.{module}").commands}
    assert defined == COMMANDS
    assert sorted(swarm.cli.main.list_commands(None)) == sorted(defined)  # type: ignore[arg-type]
