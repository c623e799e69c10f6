"""Data preparation: split, tokenizer, token files, cache. FIXED, do not modify.

=====================================================================================================
This file is part of the fixed harness (and of its fingerprint). Agents edit train.py only.

A prepared corpus is two directories, named alike, that no process needs both of:
  <cache_dir>/data/<corpus>-<tokenizer>-v2/       what training may have (through the runner)
    train.bin           the token ids of the training split, uint16 little-endian; every document
                        starts with the document token DOC (id vocab_size - 1)
    tokenizer.json      the tokenizer: regex pattern, every token's bytes in rank order, DOC
    manifest.json       counts (documents, tokens, bytes per split) for people and tests
  <cache_dir>/heldout/<corpus>-<tokenizer>-v2/    what only the evaluation process opens (mode 700)
    val.bin             the validation split, scored for every run
    audit.bin           the audit split, never used for search: scored only for promoted bests
Split, by document index: document i is validation when i % VAL_EVERY == VAL_EVERY - 1, audit when
i % AUDIT_EVERY == AUDIT_AT (never both: the residues mod 5 differ), else training.
The tokenizer is trained on the training split only (on a fixed stride of its documents where it
is larger than TOKENIZER_SAMPLE), with rustbpe (byte-level BPE, deterministic), or is plain bytes;
the splits are encoded in chunks, each in parallel on every core (rustbpe's batch_encode, rayon).
Bits per byte count each target token's raw bytes (DOC counts as zero bytes and is left out of the
score), never by decoding and re-encoding text.

Prepare is atomic: it builds in temporary directories beside the targets and renames them into
place, the held-out one first, so a manifest means both are complete, and two processes preparing
the same corpus at once both end with one complete copy.
=====================================================================================================
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from harness import corpora
from harness.errors import HarnessError

FORMAT = 2  # bump when the files' layout or meaning changes: old caches are then ignored
VAL_EVERY = 10  # every 10th document is validation: ~10% of the text, whole documents only
AUDIT_EVERY, AUDIT_AT = 25, 12  # 4% of the documents are the audit split, kept out of the search
MIN_DOCUMENTS = AUDIT_AT + 1  # one document in each split at least
HELDOUT = "heldout"  # the sibling of "data" in the cache that training processes are never granted
BPE_VOCAB = 4096  # 4,095 BPE tokens + DOC; ~3.2 bytes/token on our corpora, small embedding for CPU
TOKENIZER_SAMPLE = 100_000_000  # characters the BPE is trained on at most: sympy's 23.5 MB whole, pypi's 1.3 GB sampled
ENCODE_CHUNK = 32_000_000  # characters encoded per call: bounds the memory of the Python id lists
Tokenizer = Literal["bpe", "byte"]
Encode = Callable[[list[str]], list[list[int]]]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """A prepared corpus on disk. Only the runner and the evaluator see `heldout` (val and audit)."""

    dir: Path
    corpus: str
    vocab_size: int

    @property
    def train_path(self) -> Path:
        return self.dir / "train.bin"

    @property
    def heldout(self) -> Path:
        return self.dir.parent.parent / HELDOUT / self.dir.name

    @property
    def val_path(self) -> Path:
        return self.heldout / "val.bin"

    @property
    def audit_path(self) -> Path:
        return self.heldout / "audit.bin"

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / "tokenizer.json"

    @property
    def doc_token(self) -> int:
        return self.vocab_size - 1

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.dir / "manifest.json").read_text())


def prepare(
    corpus: str, cache_dir: Path, tokenizer: Tokenizer = "bpe", notify: Notify | None = None, default: str = "shakespeare",
    vocab: int = BPE_VOCAB,
) -> Prepared:
    """The prepared corpus, building it first if the cache does not have it yet.

    `default` is the corpus that "default" stands for: the tier's own (see tiers.Tier.corpus);
    `vocab` the BPE vocabulary's size, DOC included (the tier's `vocab_size`).
    """
    say = notify or (lambda text: print(text, file=sys.stderr))
    concrete = corpora.resolve(corpus, default)
    corpora.refuse_exposed(concrete)  # on every call: a package installed after preparation leaks too
    root = Path(cache_dir).expanduser() / "data"
    size = "" if tokenizer == "byte" or vocab == BPE_VOCAB else str(vocab)
    target = root / f"{corpora.identity(concrete)}-{tokenizer}{size}-v{FORMAT}"
    if (target / "manifest.json").is_file():
        return _open(target)
    held = root.parent / HELDOUT
    root.mkdir(parents=True, exist_ok=True)
    held.mkdir(mode=0o700, exist_ok=True)
    docs = corpora.documents(concrete, Path(cache_dir).expanduser(), say)
    if len(docs) < MIN_DOCUMENTS:
        raise HarnessError(f"corpus {corpus!r}: {len(docs)} documents; the split needs at least {MIN_DOCUMENTS}")
    say(f"preparing corpus {concrete} ({len(docs)} documents, tokenizer {tokenizer}) into {target}")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    held_work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=held))
    try:
        _build(work, held_work, concrete, docs, tokenizer, vocab, say)
        for built, final in ((held_work, held / target.name), (work, target)):
            try:
                os.rename(built, final)
            except OSError:
                if not (target / "manifest.json").is_file() and not (final / "val.bin").is_file():
                    raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(held_work, ignore_errors=True)
    return _open(target)


def split(docs: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(train, val, audit) by document index; deterministic and independent of the content."""
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for i, doc in enumerate(docs):
        parts[1 if i % VAL_EVERY == VAL_EVERY - 1 else 2 if i % AUDIT_EVERY == AUDIT_AT else 0].append(doc)
    return parts


def _open(target: Path) -> Prepared:
    manifest = json.loads((target / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise HarnessError(f"{target}: prepared with another format; delete it and prepare again")
    return Prepared(dir=target, corpus=manifest["corpus"], vocab_size=manifest["vocab_size"])


def _build(
    work: Path, held_work: Path, corpus: str, docs: list[str], tokenizer: Tokenizer, vocab: int, say: Notify,
) -> None:
    train, val, audit = split(docs)
    started = time.perf_counter()
    sample = tokenizer_sample(train)
    pattern, ranks, encode = _train_tokenizer(sample, tokenizer, vocab)
    say(f"tokenizer {tokenizer} trained on {sum(map(len, sample)) / 1e6:.1f}M characters "
        f"in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    vocab_size = len(ranks) + 1
    doc_token = vocab_size - 1
    token_bytes = [len(token) for token in ranks] + [0]
    counts = {}
    for name, texts in (("train", train), ("val", val), ("audit", audit)):
        ids = array("H")
        for chunk in _chunks(texts):
            for encoded in encode(chunk):
                ids.append(doc_token)
                ids.extend(encoded)
        if sys.byteorder != "little":
            ids.byteswap()
        ((work if name == "train" else held_work) / f"{name}.bin").write_bytes(ids.tobytes())
        counts[name] = {"documents": len(texts), "tokens": len(ids), "bytes": sum(len(t.encode()) for t in texts)}
    say(f"tokenized {sum(c['tokens'] for c in counts.values()):,} tokens in {time.perf_counter() - started:.1f} s")
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


def tokenizer_sample(train: list[str], limit: int = TOKENIZER_SAMPLE) -> list[str]:
    """The training documents the tokenizer learns from: all of them up to `limit` characters, else
    every k-th (a fixed stride, so the same sample everywhere, drawn from the whole corpus)."""
    total = sum(map(len, train))
    return train if total <= limit else train[:: -(-total // limit)]


def _chunks(texts: list[str]) -> Iterator[list[str]]:
    """Runs of documents of about ENCODE_CHUNK characters: each is encoded in parallel, and the
    Python lists of its ids (~30 bytes a token) are dropped before the next."""
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= ENCODE_CHUNK:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _train_tokenizer(train: list[str], tokenizer: Tokenizer, vocab: int) -> tuple[str, list[bytes], Encode]:
    """(regex pattern, token bytes in rank order, encoder). The rank of a token is its id."""
    if tokenizer == "byte":
        return "", [bytes([b]) for b in range(256)], lambda texts: [list(text.encode()) for text in texts]
    import rustbpe

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(train), vocab - 1)
    ranks = sorted(bpe.get_mergeable_ranks(), key=lambda pair: pair[1])
    if [rank for _, rank in ranks] != list(range(len(ranks))):
        raise HarnessError("tokenizer: rustbpe returned ranks that are not 0..n-1")
    # rustbpe encodes (in parallel, deterministically) with exactly the merges it trained.
    return bpe.get_pattern(), [bytes(token) for token, _ in ranks], bpe.batch_encode
