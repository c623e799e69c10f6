"""The harness's settings: a frozen pydantic model that the swarm's settings compose as `harness`.

Values only (paths, names, numbers), so a run's settings can be printed, compared and sent to
another process. Read from `swarm.toml` and `SWARM_HARNESS__*` by the swarm; the harness's own
command line builds one directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class HarnessSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: str = "tiny"
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "swarm")
    corpus: str = "default"  # a named corpus, or a path to text files / Parquet shards
    memory_cap_mb: int | None = None  # None: half of the machine's memory
    tokenizer: Literal["bpe", "byte"] = "bpe"  # bpe: trained locally with rustbpe; byte: raw UTF-8 bytes
    sim_seconds: float | None = None  # duration of a sim-tier run; None: the tier's own (2 s)
    # Run train.py without the OS sandbox where this machine has none (harness.jail). Its results are
    # NOT trustworthy (train.py could read the validation data): each is labelled sandbox "none (untrusted)".
    allow_unsandboxed: bool = False
