"""The harness fingerprint: which fixed code, data and tokenizer produced a result.

Results with different fingerprints are never compared. The hash covers exactly the files that
can change a score: the fixed modules listed in FIXED_FILES, and the prepared data and tokenizer
(or, for the synthetic tier, the baseline train.py its optimum is derived from). Not the runner,
guard, CLI or an agent's train.py: changing those must not split the history.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from harness.prepare import Prepared
from harness.tiers import Tier

HARNESS_DIR = Path(__file__).resolve().parent
FIXED_FILES = ("corpora.py", "prepare.py", "contract.py", "worker.py", "jail.py", "evaluate.py", "tiers.py", "sim.py")
BASELINE = HARNESS_DIR / "train.py"


def fingerprint(prepared: Prepared | None, tier: Tier | None = None, harness_dir: Path = HARNESS_DIR) -> str:
    """16 hex digits of sha256 over the fixed code and the data (or the sim's baseline)."""
    digest = hashlib.sha256()
    for name in FIXED_FILES:
        digest.update(f"code {name}\0".encode() + bytes.fromhex(_file_hash(harness_dir / name)))
    if tier is not None and tier.synthetic:
        digest.update(b"synthetic\0" + bytes.fromhex(_file_hash(harness_dir / BASELINE.name)))
    elif prepared is not None:
        for path in (prepared.train_path, prepared.val_path, prepared.tokenizer_path):
            digest.update(f"data {path.name}\0".encode() + bytes.fromhex(_file_hash(path)))
    return digest.hexdigest()[:16]


def _file_hash(path: Path) -> str:
    stat = path.stat()
    return _hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=64)
def _hash(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """Keyed by the file's identity and stat, so a changed file is hashed again, an unchanged one once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
