"""`swarm status` says when a recent run repeated its training data (more than one epoch)."""

from __future__ import annotations

from rich.console import Console

from swarm import status

COUNTS = {"runs": 3, "ok": 3, "failed": 0, "running": 0, "lost": 0, "events": 9, "parked": 0, "llm_calls": 0}


def test_status_shows_the_epochs_of_a_run_that_repeated_its_data() -> None:
    recent = [
        {"run": "run-repeated", "purpose": "explore", "seed": 1, "status": "ok", "val_bpb": 1.5, "epochs": 3.42},
        {"run": "run-fresh", "purpose": "explore", "seed": 2, "status": "ok", "val_bpb": 1.6, "epochs": 0.61},
        {"run": "run-synthetic", "purpose": "explore", "seed": 3, "status": "ok", "val_bpb": 1.7, "epochs": None},
    ]
    snap = status.Snapshot("a test board", False, COUNTS, [], [], [], recent=recent)
    console = Console(record=True, width=200)
    console.print(status.render(snap))
    lines = {line.split()[1]: line for line in console.export_text().splitlines() if "run-" in line}
    assert "ok, 3.4 epochs" in lines["run-repeated"]
    assert "epochs" not in lines["run-fresh"] and "epochs" not in lines["run-synthetic"]
