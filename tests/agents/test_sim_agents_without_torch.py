"""On the sim tier an agent never loads torch: 241 MiB and 2 s of CPU each, 64 times over at 64 devices."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_agent_that_runs_a_sim_patch_never_imports_torch(tmp_path: Path) -> None:
    """Everything an agent process loads (the CLI, every role, the offline brain, the arena, the
    runner), then a whole sim run through the runner, in a fresh interpreter: torch never appears."""
    script = textwrap.dedent(f"""
        import sys
        import swarm.cli.agent, roles, roles.ideator, roles.implementer, roles.reviewer, roles.replicator
        from agents.arena import describe
        from agents.brains import make_brain
        from agents.brains.base import Accounting
        from harness import tiers
        from harness.runner import run_sync
        from harness.settings import HarnessSettings
        from roles.common import contract_text
        from swarm.ground.settings import BrainSettings

        make_brain(BrainSettings(kind="offline"), Accounting())
        describe("sim", "cpu", HarnessSettings())
        assert "Run" in contract_text()
        source = open({str(ROOT / "harness" / "train.py")!r}).read()
        result = run_sync(source, tiers.get("sim").with_duration(0.2), runs_dir={str(tmp_path)!r})
        assert result.status == "ok", result
        print("torch loaded:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch loaded: []" in done.stdout, done.stdout
