"""`swarm report`: a page a person opens in a browser, checked in a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.history.sim import Head, SimSwarm, count_runs, swarm
from tests.report.chromium import Browser

DOTS = "document.querySelectorAll('g[id^=\"runs-\"] use').length"  # one <use> per run in the scatter groups


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = Browser(tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def svg_texts(page: str) -> list[str]:
    """The texts of the figures: matplotlib draws glyphs as paths and keeps each text in a comment."""
    return re.findall(r"<!-- (.*?) -->", page)


def test_the_browser_check_catches_console_errors_failed_loads_and_requests(browser: Browser, tmp_path: Path) -> None:
    """The checks below mean something: a page that breaks is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img src="missing.png"><script>console.error("boom"); nope();</script></body></html>')
    browser.open(page)
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("nope" in e for e in errors) and any("missing.png" in e for e in errors)
    assert browser.requests() == [page.resolve().as_uri(), (tmp_path / "missing.png").resolve().as_uri()]


def test_report_of_a_running_swarm(live: SimSwarm, tmp_path: Path) -> None:
    result = swarm("report", str(tmp_path / "live.html"), "--url", live.url())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "live.html"), str(tmp_path / "live.png")]
    page = (tmp_path / "live.html").read_text()
    assert "read from the service at nats://" in page
    assert sum(text.startswith(("explore run", "baseline run", "replicate run")) for text in svg_texts(page)) >= 2


def test_report_renders_in_chromium_without_errors_and_plots_every_run(stopped: Path, browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = swarm("report", str(page), "--dir", str(stopped))
    assert result.exit_code == 0, result.stderr
    browser.open(page)
    assert browser.errors() == []
    assert browser.requests() == [page.resolve().as_uri()]  # self-contained: nothing else is fetched
    assert browser.evaluate(DOTS) == count_runs(stopped)
    headings = browser.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
    assert headings == ["val_bpb over experiments", "runs per node and per hour", "lineage of each arena's best",
                        "promotions", "search score against audit score", "candidates not promoted", "cost per result",
                        "lab notebook"]  # fmt: skip
    assert browser.evaluate("document.querySelectorAll('figure svg').length") == 4
    assert browser.evaluate("document.title") == "swarm report (synthetic results)"
    promotions = browser.evaluate("document.querySelectorAll('h2 + table tbody tr').length")
    assert promotions >= 1  # the baseline's, at least
    browser.screenshot(tmp_path / "screenshot.png")
    assert (tmp_path / "screenshot.png").stat().st_size > 50_000
    texts = svg_texts(page.read_text())
    assert "SYNTHETIC results (sim tier)" in texts  # the legend's title
    assert any(text.startswith("SYNTHETIC results (sim tier): ") for text in texts)  # the plot's title
    png = page.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_report_is_the_same_from_a_running_swarm_and_from_its_directory(stopped: Path, tmp_path: Path) -> None:
    head = Head(stopped)
    try:
        assert swarm("report", str(tmp_path / "running.html"), "--url", head.url).exit_code == 0
    finally:
        head.stop()
    assert swarm("report", str(tmp_path / "stopped.html"), "--dir", str(stopped)).exit_code == 0

    def content(name: str) -> str:  # all but the line that says where and when it was read
        return re.sub(r"read from .* at \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", (tmp_path / name).read_text())

    assert content("running.html") == content("stopped.html")
    assert (tmp_path / "running.png").read_bytes() == (tmp_path / "stopped.png").read_bytes()


def test_report_of_a_missing_swarm_is_one_clear_line(tmp_path: Path) -> None:
    result = swarm("report", str(tmp_path / "r.html"), "--dir", str(tmp_path / "none"))
    assert result.exit_code == 2 and result.stderr.startswith("swarm: no swarm directory at ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_the_report_shows_the_lab_notebook() -> None:
    from swarm.report import ReportData, render

    note = {"seq": 9, "arena": "sim/cpu/abc", "trials": 20, "note": "Helps: MATRIX_LR 0.04 <p3>.", "written_by": "i1",
            "written_at": "2026-01-01T00:00:00"}  # fmt: skip
    data = ReportData("test", [], [], [], [], [], {}, notes=[note])
    page = render(data, "", "", "", "")
    assert "<h2>lab notebook</h2>" in page and "Helps: MATRIX_LR 0.04 &lt;p3&gt;." in page and ">20<" in page
    assert "No notes" in render(ReportData("test", [], [], [], [], [], {}), "", "", "", "")


async def test_cost_per_result_is_per_brain_kind(tmp_path: Path) -> None:
    from blackboard.events import (AgentJoined, ArenaOpened, BestPromoted, HypothesisProposed, PatchSubmitted,
                                   RunFinished, UsageRecorded)  # fmt: skip
    from blackboard.projection import Projection
    from swarm.history import gather_costs
    from swarm.reader import FileReader
    from swarm.report import ReportData, render

    ids = dict(patch="p1", arena="sim/cpu/a", seed=0, purpose="explore", tier="sim", device="cpu", node="n1")
    events = [
        ArenaOpened(by="n1", arena="sim/cpu/a", baseline_patch="p0", fingerprint="f", tier="sim", hardware="cpu",
                    baseline_code="A = 1\n", baseline_hash="h0"),
        AgentJoined(by="i1", agent="i1", role="ideator", node="n1", brain="anthropic"),
        AgentJoined(by="i2", agent="i2", role="ideator", node="n1", brain="offline"),
        HypothesisProposed(by="i1", hypothesis="h1", arena="sim/cpu/a", title="t"),
        PatchSubmitted(by="m1", patch="p1", arena="sim/cpu/a", hypothesis="h1", parent="p0", code="A = 2\n", code_hash="h1"),
        *[RunFinished(by="m1", run=f"r{i}", **ids, status="ok", val_bpb=1.5, total_seconds=1800.0, fingerprint="f",
                      source_hash="s") for i in range(2)],
        BestPromoted(by="s", arena="sim/cpu/a", patch="p1", mean=1.5, std=0.0, n=2, previous="p0", reason="better"),
        UsageRecorded(by="i1", agent="i1", provider="anthropic", model="m", input_tokens=1, output_tokens=1, cost_usd=1.5),
        UsageRecorded(by="i2", agent="i2", provider="offline", model="tpe", input_tokens=0, output_tokens=0, cost_usd=0.0),
    ]  # fmt: skip
    projection = Projection(tmp_path / "board.duckdb")
    projection.apply_many(enumerate(events, 1))
    costs = await gather_costs(FileReader(projection.conn, "test"))
    assert costs == [
        {"brain": "anthropic", "promotions": 1, "llm_usd": 1.5, "device_hours": 1.0, "usd_per_promotion": 1.5,
         "hours_per_promotion": 1.0},
        {"brain": "offline", "promotions": 0, "llm_usd": 0.0, "device_hours": 0.0, "usd_per_promotion": None,
         "hours_per_promotion": None},
    ]  # fmt: skip
    page = render(ReportData("test", [], [], [], [], [], {}, costs=costs), "", "", "", "")
    assert "<h2>cost per result</h2>" in page and "$1.50" in page


async def test_the_report_plots_each_audited_best_search_score_against_audit_score(tmp_path: Path) -> None:
    """Two promotions, both audited, and a third best promoted but not yet audited: two dots, at
    (promoted mean, audit score), and the unaudited best is not drawn."""
    from blackboard.events import ArenaOpened, AuditScored, BestPromoted, PatchSubmitted
    from blackboard.projection import Projection
    from swarm.reader import FileReader
    from swarm.report import gather, write

    arena = "sim/cpu/a"
    events = [
        ArenaOpened(by="n1", arena=arena, baseline_patch="p0", fingerprint="f", tier="sim", hardware="cpu",
                    baseline_code="A = 1\n", baseline_hash="h0", synthetic=True),
        *[PatchSubmitted(by="m1", patch=f"p{i}", arena=arena, parent=f"p{i - 1}", code=f"A = {i + 1}\n", code_hash=f"h{i}")
          for i in (1, 2)],
        BestPromoted(by="s", arena=arena, patch="p0", mean=1.61, std=0.0, n=3, reason="the baseline"),
        AuditScored(by="r1", patch="p0", arena=arena, status="ok", val_bpb=1.6123),
        BestPromoted(by="s", arena=arena, patch="p1", mean=1.57, std=0.0, n=3, previous="p0", reason="better"),
        AuditScored(by="r1", patch="p1", arena=arena, status="ok", val_bpb=1.5987),
        BestPromoted(by="s", arena=arena, patch="p2", mean=1.55, std=0.0, n=3, previous="p1", reason="better"),
    ]  # fmt: skip
    projection = Projection(tmp_path / "board.duckdb")
    projection.apply_many(enumerate(events, 1))
    data = await gather(FileReader(projection.conn, "test"))
    assert [(a["patch"], a["search_bpb"], a["audit_bpb"]) for a in data.audited] == [("p0", 1.61, 1.6123), ("p1", 1.57, 1.5987)]
    page, _ = write(data, tmp_path / "report.html")
    text = page.read_text()
    assert "<h2>search score against audit score</h2>" in text
    [group] = re.findall(r'<g id="audits-0">(.*?)</g>', text, flags=re.S)
    assert group.count("<use ") == 2
    assert "sim/cpu/a (synthetic) (2)" in svg_texts(text)  # the legend: the arena, synthetic, its audited bests
