"""Corpora, split, tokenizer and the fingerprint: deterministic, byte-exact, and honest about change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from harness import corpora, fingerprint, prepare, tiers
from harness.errors import HarnessError

TEXTS = ["plain ascii text number %d, with some words repeated words repeated.\n" % i for i in range(25)]
TEXTS[3] = "héllo wörld: ünïcödé, 日本語のテキスト, emoji 🙂🚀 and Ελληνικά.\n" * 20
TEXTS[9] = "validation: naïve café — “quotes” — 中文 🙂\n" * 20


def write_corpus(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (root / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


def test_the_default_corpus_prepares_identically_twice(prepared: prepare.Prepared, tmp_path: Path) -> None:
    downloads = prepared.dir.parent.parent / "downloads"
    if downloads.is_dir():  # reuse the archive: this test is about determinism, not the network
        shutil.copytree(downloads, tmp_path / "downloads")
    again = prepare.prepare("default", tmp_path)
    for name in ("train.bin", "tokenizer.json", "manifest.json"):
        assert (again.dir / name).read_bytes() == (prepared.dir / name).read_bytes(), name
    for name in ("val.bin", "audit.bin"):
        assert (again.heldout / name).read_bytes() == (prepared.heldout / name).read_bytes(), name
    manifest = again.manifest()
    assert manifest["val"]["documents"] >= 4 and manifest["train"]["tokens"] > 10 * manifest["val"]["tokens"] / 2


def test_split_is_every_tenth_document_and_an_audit_document_in_25() -> None:
    docs = [str(i) for i in range(60)]
    train, val, audit = prepare.split(docs)
    assert val == ["9", "19", "29", "39", "49", "59"] and audit == ["12", "37"] and len(train) == 52


@pytest.mark.parametrize("tokenizer", ["bpe", "byte"])
def test_token_bytes_count_raw_utf8_exactly(tmp_path: Path, tokenizer: str) -> None:
    """Bits per byte divide by the raw bytes of the targets: concatenated token bytes are the text."""
    corpus = write_corpus(tmp_path / "corpus", TEXTS)
    ready = prepare.prepare(str(corpus), tmp_path / "cache", tokenizer)  # type: ignore[arg-type]
    spec = json.loads(ready.tokenizer_path.read_text())
    ranks = [bytes.fromhex(token) for token in spec["ranks"]]
    ids = list(memoryview(ready.val_path.read_bytes()).cast("H"))
    doc = ready.doc_token
    assert spec["token_bytes"][doc] == 0 and ids[0] == doc
    _, val, _ = prepare.split(TEXTS)
    assert b"".join(ranks[i] for i in ids if i != doc) == "".join(val).encode()
    assert sum(spec["token_bytes"][i] for i in ids) == len("".join(val).encode())
    # Multi-byte characters split across tokens still count each byte once, and only once.
    assert any(not _is_utf8(ranks[i]) for i in ids if i != doc) or tokenizer == "bpe"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_tokenizer_training_is_deterministic(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", TEXTS)
    first = prepare.prepare(str(corpus), tmp_path / "a")
    second = prepare.prepare(str(corpus), tmp_path / "b")
    for path in ("train.bin", "tokenizer.json", "../../heldout/{}/val.bin", "../../heldout/{}/audit.bin"):
        name = path.format(first.dir.name)
        assert (first.dir / name).read_bytes() == (second.dir / name).read_bytes()


def test_editing_the_users_data_prepares_it_again(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", TEXTS)
    first = prepare.prepare(str(corpus), tmp_path / "cache")
    (corpus / "doc000.txt").write_text("changed\n")
    assert prepare.prepare(str(corpus), tmp_path / "cache").dir != first.dir


def test_parquet_shards_with_a_text_column(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    with duckdb.connect() as con:
        for shard in range(2):
            rows = ", ".join(f"({i}, '{TEXTS[shard * 10 + i].replace(chr(39), chr(39) * 2)}')" for i in range(10))
            con.execute(f"COPY (SELECT * FROM (VALUES {rows}) t(id, text)) TO '{shards}/part-{shard}.parquet' (FORMAT parquet)")
    docs = corpora.documents(corpora.resolve(str(shards)), tmp_path)
    assert docs == TEXTS[:20]
    ready = prepare.prepare(str(shards / "*.parquet"), tmp_path / "cache")
    assert ready.manifest()["val"]["documents"] == 2


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not a built-in corpus"):
        prepare.prepare(str(tmp_path / "nothing-here"), tmp_path)


def test_sympy_is_read_verified_and_in_order() -> None:
    docs = corpora.documents("sympy", Path("/nonexistent"))
    assert len(docs) == 1532 and all(isinstance(d, str) for d in docs)
    assert docs[0].startswith("\"\"\"\nSymPy is a Python library")
    assert docs == corpora.documents("sympy", Path("/nonexistent"))


# --- fingerprint ---------------------------------------------------------------------------------


@pytest.fixture()
def copies(prepared: prepare.Prepared, tmp_path: Path) -> tuple[Path, prepare.Prepared]:
    """A copy of the harness code and of the prepared data, to change without harm."""
    code = tmp_path / "harness"
    shutil.copytree(Path(fingerprint.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "data" / prepared.dir.name
    shutil.copytree(prepared.dir, data)
    shutil.copytree(prepared.heldout, tmp_path / "heldout" / prepared.dir.name)
    return code, prepare.Prepared(dir=data, corpus=prepared.corpus, vocab_size=prepared.vocab_size)


def test_fingerprint_changes_with_fixed_code_data_or_tokenizer(copies: tuple[Path, prepare.Prepared]) -> None:
    code, data = copies
    before = fingerprint.fingerprint(data, harness_dir=code)
    seen = {before}
    fixed = [code / name for name in fingerprint.fixed_files(code)]
    assert {"runner.py", "guard.py", "evaluate.py", "worker.py", "procs.py"} <= {p.name for p in fixed}
    for path in [*fixed, data.val_path, data.train_path, data.tokenizer_path]:
        with path.open("ab") as handle:
            handle.write(b"\n")
        now = fingerprint.fingerprint(data, harness_dir=code)
        assert now not in seen, path.name
        seen.add(now)


def test_fingerprint_ignores_the_editable_baselines(copies: tuple[Path, prepare.Prepared]) -> None:
    code, data = copies
    before = fingerprint.fingerprint(data, harness_dir=code)
    for name in tiers.baselines():
        with (code / name).open("a") as handle:
            handle.write("\n# an edit that cannot change a score\n")
    (data.dir / "manifest.json").touch()
    assert fingerprint.fingerprint(data, harness_dir=code) == before


def test_sim_fingerprint_follows_the_baseline_not_the_data(copies: tuple[Path, prepare.Prepared]) -> None:
    code, data = copies
    sim = tiers.get("sim")
    before = fingerprint.fingerprint(None, sim, harness_dir=code)
    assert fingerprint.fingerprint(data, sim, harness_dir=code) == before
    with (code / "train.py").open("a") as handle:
        handle.write("\n")
    assert fingerprint.fingerprint(None, sim, harness_dir=code) != before
