"""Data preparation: split, tokenizer, token files, cache. FIXED, do not modify.

=====================================================================================================
This file is part of the fixed harness (and of its fingerprint). Agents edit train.py only.

A prepared corpus is a directory `<cache_dir>/data/<corpus>-<tokenizer>-v1/` holding
  train.bin, val.bin    the token ids of each split, uint16 little-endian; every document starts
                        with the document token DOC (id vocab_size - 1)
  tokenizer.json        the tokenizer: regex pattern, every token's bytes in rank order, DOC
  manifest.json         counts (documents, tokens, bytes per split) for people and tests
Split: document i goes to validation when i % VAL_EVERY == VAL_EVERY - 1, else to training.
The tokenizer is trained on the training split only, with rustbpe (byte-level BPE, deterministic),
or is plain bytes. Bits per byte count each target token's raw bytes (DOC counts as zero bytes
and is left out of the score), never by decoding and re-encoding text.

Prepare is atomic: it builds in a temporary directory beside the target and renames it into place,
so two processes preparing the same corpus at once both end with one complete copy.
=====================================================================================================
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from harness import corpora
from harness.errors import HarnessError

FORMAT = 1  # bump when the files' layout or meaning changes: old caches are then ignored
VAL_EVERY = 10  # every 10th document is validation: ~10% of the text, whole documents only
BPE_VOCAB = 4096  # 4,095 BPE tokens + DOC; ~3.2 bytes/token on our corpora, small embedding for CPU
Tokenizer = Literal["bpe", "byte"]
Encode = Callable[[list[str]], list[list[int]]]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """A prepared corpus on disk. Only the runner and the evaluator see `val_path`."""

    dir: Path
    corpus: str
    vocab_size: int

    @property
    def train_path(self) -> Path:
        return self.dir / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.dir / "val.bin"

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / "tokenizer.json"

    @property
    def doc_token(self) -> int:
        return self.vocab_size - 1

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dir / "manifest.json").read_text())


def prepare(
    corpus: str, cache_dir: Path, tokenizer: Tokenizer = "bpe", notify: Notify | None = None, default: str = "shakespeare"
) -> Prepared:
    """The prepared corpus, building it first if the cache does not have it yet.

    `default` is the corpus that "default" stands for: the tier's own (see tiers.Tier.corpus).
    """
    say = notify or (lambda text: print(text, file=sys.stderr))
    concrete = corpora.resolve(corpus, default)
    root = Path(cache_dir).expanduser() / "data"
    target = root / f"{corpora.identity(concrete)}-{tokenizer}-v{FORMAT}"
    if (target / "manifest.json").is_file():
        return _open(target)
    root.mkdir(parents=True, exist_ok=True)
    docs = corpora.documents(concrete, Path(cache_dir).expanduser(), say)
    if len(docs) < VAL_EVERY:
        raise HarnessError(f"corpus {corpus!r}: {len(docs)} documents; the split needs at least {VAL_EVERY}")
    say(f"preparing corpus {concrete} ({len(docs)} documents, tokenizer {tokenizer}) into {target}")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        _build(work, concrete, docs, tokenizer)
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "manifest.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _open(target)


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    """(train, val) by document index; deterministic and independent of the content."""
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_EVERY - 1]
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY == VAL_EVERY - 1]
    return train, val


def _open(target: Path) -> Prepared:
    manifest = json.loads((target / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise HarnessError(f"{target}: prepared with another format; delete it and prepare again")
    return Prepared(dir=target, corpus=manifest["corpus"], vocab_size=manifest["vocab_size"])


def _build(work: Path, corpus: str, docs: list[str], tokenizer: Tokenizer) -> None:
    train, val = split(docs)
    pattern, ranks, encode = _train_tokenizer(train, tokenizer)
    vocab_size = len(ranks) + 1
    doc_token = vocab_size - 1
    token_bytes = [len(token) for token in ranks] + [0]
    counts = {}
    for name, texts in (("train", train), ("val", val)):
        ids = array("H")
        for encoded in encode(texts):
            ids.append(doc_token)
            ids.extend(encoded)
        if sys.byteorder != "little":
            ids.byteswap()
        (work / f"{name}.bin").write_bytes(ids.tobytes())
        counts[name] = {"documents": len(texts), "tokens": len(ids), "bytes": sum(len(t.encode()) for t in texts)}
    (work / "tokenizer.json").write_text(json.dumps({
        "kind": tokenizer,
        "pattern": pattern,
        "ranks": [token.hex() for token in ranks],
        "doc_token": doc_token,
        "token_bytes": token_bytes,
    }))
    (work / "manifest.json").write_text(json.dumps(
        {"format": FORMAT, "corpus": corpus, "tokenizer": tokenizer, "vocab_size": vocab_size, **counts}, indent=1
    ))


def _train_tokenizer(train: list[str], tokenizer: Tokenizer) -> tuple[str, list[bytes], Encode]:
    """(regex pattern, token bytes in rank order, encoder). The rank of a token is its id."""
    if tokenizer == "byte":
        return "", [bytes([b]) for b in range(256)], lambda texts: [list(text.encode()) for text in texts]
    import rustbpe

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(train), BPE_VOCAB - 1)
    ranks = sorted(bpe.get_mergeable_ranks(), key=lambda pair: pair[1])
    if [rank for _, rank in ranks] != list(range(len(ranks))):
        raise HarnessError("tokenizer: rustbpe returned ranks that are not 0..n-1")
    # rustbpe encodes (in parallel, deterministically) with exactly the merges it trained.
    return bpe.get_pattern(), [bytes(token) for token, _ in ranks], bpe.batch_encode
