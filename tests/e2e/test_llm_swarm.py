"""A whole swarm driven by an LLM, through the real Anthropic and OpenAI SDKs against a fake server.

The fake model plays every role from a script: the ideator proposes an idea that really improves
the score, one whose patch would crash, one that games the metric, and the first one again in other
words; the implementer writes those patches; the reviewer approves. The pre-flight sends the crash
back in the same conversation and it is fixed before any run; the cheat fails the pre-flight every
time and is given up with the reason, never run; the repeated idea is refused before it is queued,
with a pointer, and the model is asked once more. The sim tier scores patches in a fraction of a
second, so the whole story takes a minute.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from agents.brains.optimiser import N_STARTUP
from agents.knobs import edit, read
from blackboard.client import Board
from harness import sim
from harness.knobs import read as read_knobs
from swarm.ground.bus import Bus
from tests.fakellm import FakeLLM, Reply, Request, code_answer, ideas_answer, verdict_answer

BASELINE = sim.BASELINE.read_text()
SECRET = "sk-test-secret-never-logged"


def improving_change() -> dict[str, float]:
    """Knob changes that lower the sim's noise-free score by well over its noise."""
    base = read(BASELINE)
    numeric = [k for k, v in base.items() if isinstance(v, float) and v > 0]
    chosen: dict[str, float] = {}
    score = sim.loss(read_knobs(BASELINE), read_knobs(BASELINE))
    for _ in range(3):
        options = [(sim.loss(read_knobs(edit(BASELINE, {**chosen, k: float(f"{base[k] * f:.3g}")})), read_knobs(BASELINE)), k, f)
                   for k in numeric if k not in chosen for f in (0.5, 0.7, 1.4, 2.0)]  # fmt: skip
        best, knob, factor = min(options)
        chosen[knob] = float(f"{base[knob] * factor:.3g}")
        if score - best > 0.04:
            break
    return chosen


GOOD = improving_change()
IDEAS = {
    "good": {"title": "Tune the most sensitive knobs", "rationale": "they matter most", "intent": {"knobs": GOOD}},
    "again": {"title": "Move the knobs that matter", "rationale": "same values, other words", "intent": {"knobs": GOOD}},
    "crash": {"title": "Name the learning rate", "rationale": "readability", "intent": {"change": "make MATRIX_LR a word"}},
    "cheat": {"title": "Peek at the validation data", "rationale": "more data", "intent": {"change": "read val"}},
}
CODE = {
    IDEAS["good"]["title"]: edit(BASELINE, GOOD),
    IDEAS["crash"]["title"]: edit(BASELINE, {"MATRIX_LR": "fast"}),
    IDEAS["cheat"]["title"]: BASELINE.replace("import math\n", "import math\nVAL = open('/root/.cache/swarm/val.bin', 'rb').read()\n", 1),
}
REPAIRED = edit(BASELINE, {"MATRIX_LR": read(BASELINE)["MATRIX_LR"] * 3})  # runs fine, and is clearly worse


def script(fake: FakeLLM) -> None:
    """The model's answers: four ideas in turn (the last one a duplicate), then none; patches by idea:
    the crash is fixed when the pre-flight sends it back, the cheat comes back unchanged every time."""
    ideas = [ideas_answer([IDEAS[k]]) for k in ("good", "crash", "cheat", "again")]

    def answer(request: Request) -> str:
        if request.task == "ideas":
            return ideas.pop(0) if ideas else ideas_answer([])
        if request.task in ("implement", "repair"):
            if request.title == IDEAS["crash"]["title"] and request.attempt > 1:
                return code_answer(REPAIRED, "MATRIX_LR must be a number")
            return code_answer(CODE[request.title or ""])
        return verdict_answer("approve", ["The diff changes only the knobs the hypothesis names."])

    fake.answer_with(answer)


async def board_state(url: str) -> dict[str, list[list[object]]]:
    bus = await Bus.connect(url, name="e2e-check")
    board = Board(bus, agent="e2e-check", retry_seconds=10)
    try:
        queries = {
            "promoted": "SELECT b.patch, h.title FROM bests b JOIN patches p USING (patch) JOIN hypotheses h "
                        "ON h.hypothesis = p.hypothesis WHERE b.previous IS NOT NULL",
            "runs": "SELECT h.title, r.status, r.reason, r.purpose FROM runs r JOIN hypotheses h USING (hypothesis) "
                    "ORDER BY r.updated_at",
            "given_up": "SELECT h.title, c.reason FROM claims c JOIN work w USING (work) JOIN hypotheses h "
                        "ON h.hypothesis = w.ref WHERE c.done AND c.reason LIKE 'given up%'",
            "first": "SELECT h.hypothesis, p.patch FROM hypotheses h LEFT JOIN patches p USING (hypothesis) WHERE h.title = ?",
            "usage": "SELECT provider, count(*), sum(input_tokens), sum(output_tokens) FROM usage GROUP BY provider",
            "leaks": f"SELECT count(*) FROM events WHERE payload LIKE '%{SECRET}%'",
        }
        return {name: (await board.query(sql.replace("?", f"'{IDEAS['good']['title']}'")))["rows"] for name, sql in queries.items()}
    finally:
        await bus.close()


def refusals(fake: FakeLLM) -> list[str]:
    """The ideas requests that carry a refusal made before queueing."""
    return [r.text for r in fake.for_task("ideas") if "refused before queueing" in r.text]


def story_complete(state: dict[str, list[list[object]]], fake: FakeLLM) -> bool:
    runs = state["runs"]
    crash_title, cheat_title = IDEAS["crash"]["title"], IDEAS["cheat"]["title"]
    return (bool(state["promoted"]) and bool(refusals(fake))
            and any(t == crash_title and s == "ok" for t, s, _, _ in runs)
            and any(t == cheat_title for t, _ in state["given_up"]))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_an_llm_swarm_promotes_repairs_rejects_and_refuses(provider: str, tmp_path: Path) -> None:
    with FakeLLM() as fake:
        script(fake)
        env = {**os.environ, "SWARM_HARNESS__SIM_SECONDS": "0.3", "SWARM_BOARD__LEASE_SECONDS": "5",
               "SWARM_BRAIN__BASE_URL": fake.url if provider == "anthropic" else fake.openai_url,
               "SWARM_BRAIN__MODEL": "fake-model", f"{provider.upper()}_API_KEY": SECRET}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "swarm", "up", "--dir", str(tmp_path / "swarm"), "--tier", "sim", "--brain", provider,
             "--no-view"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            url = re.search(r"NATS at (\S+),", first)
            assert url, first
            deadline, state = time.monotonic() + 240, {}
            while time.monotonic() < deadline:
                state = asyncio.run(board_state(url.group(1)))
                if story_complete(state, fake):
                    break
                assert process.poll() is None, process.stdout.read()
                time.sleep(2)
        finally:
            process.send_signal(signal.SIGINT)
            out = first + process.communicate(timeout=120)[0]
    assert story_complete(state, fake), (state, out[-3000:])
    assert sim.loss(read_knobs(REPAIRED), read_knobs(BASELINE)) > sim.loss(read_knobs(BASELINE), read_knobs(BASELINE)) + 0.01
    [(promoted, title)] = state["promoted"]
    assert title == IDEAS["good"]["title"]
    crash = [s for t, s, _, _ in state["runs"] if t == IDEAS["crash"]["title"]]
    assert crash and set(crash) == {"ok"}  # fixed in the pre-flight: the crashing version never ran
    fixes = [r for r in fake.for_task("implement") if r.title == IDEAS["crash"]["title"] and r.attempt == 2]
    assert fixes and "failed the pre-flight" in fixes[0].text and "MATRIX_LR" in fixes[0].text
    assert not [t for t, _, _, _ in state["runs"] if t == IDEAS["cheat"]["title"]]  # never ran
    [(_, reason)] = [row for row in state["given_up"] if row[0] == IDEAS["cheat"]["title"]]
    assert "pre-flight" in reason and "open" in reason
    [[hypothesis, patch]] = state["first"]  # the pointer: the queued idea, or its patch once it has run
    assert any(f"the same knob configuration as {ref} " in refusals(fake)[0] for ref in (hypothesis, patch))
    assert not [t for t, _, _, _ in state["runs"] if t == IDEAS["again"]["title"]]
    [(used_provider, calls, tokens_in, tokens_out)] = state["usage"]
    assert used_provider == provider and calls >= 6 and tokens_in > 0 and tokens_out > 0
    assert state["leaks"] == [[0]]
    paths = {r.path for r in fake.requests}
    assert paths == ({"/v1/messages"} if provider == "anthropic" else {"/v1/chat/completions"})
    assert all(SECRET in (r.headers.get("x-api-key", "") + r.headers.get("authorization", "")) for r in fake.requests)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "swarm" / "logs").glob("*.log"))
    assert SECRET not in logs and SECRET not in out


@pytest.mark.parametrize("provider, said", [
    ("anthropic", "anthropic: HTTP 404 not_found_error: model: claude-nope"),
    ("openai", "openai: HTTP 404 model_not_found: The model `claude-nope` does not exist or you do not have access to it."),
])  # fmt: skip
def test_swarm_up_with_a_wrong_model_name_exits_at_once_with_the_providers_message(
    provider: str, said: str, tmp_path: Path
) -> None:  # fmt: skip
    with FakeLLM(models={"fake-model"}) as fake:
        env = {**os.environ, "SWARM_BRAIN__BASE_URL": fake.url if provider == "anthropic" else fake.openai_url,
               "SWARM_BRAIN__MODEL": "claude-nope", f"{provider.upper()}_API_KEY": SECRET}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "swarm", "up", "--dir", str(tmp_path / "swarm"), "--tier", "sim",
                               "--brain", provider, "--no-view"], capture_output=True, text=True, env=env, timeout=180)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"swarm: brain {provider}: model 'claude-nope' cannot be used: {said}" in done.stderr
    assert "NATS at" not in done.stdout and not (tmp_path / "swarm" / "logs").exists()  # nothing was started
    assert len(fake.requests) == 1 and SECRET not in done.stdout + done.stderr


CALL_USD = 0.01  # an ideas call: 1,000 input tokens at 10 USD per million; every other call costs next to nothing
BUDGET_USD = 0.03  # three of the LLM's ideas calls


def hybrid_script(fake: FakeLLM) -> None:
    """Ideas that differ each time (no novelty refusal), priced at CALL_USD; cheap approving reviews."""
    count = iter(range(1000))

    def answer(request: Request) -> Reply:
        if request.task == "ideas":
            i = next(count)
            knobs = {"MATRIX_LR": round(0.0311 + 0.0007 * i, 4)}
            idea = {"title": f"LLM idea {i}", "rationale": "r", "intent": {"knobs": knobs}}
            return Reply(ideas_answer([idea]), input_tokens=1000, output_tokens=0)
        if request.task == "review":
            return Reply(verdict_answer("approve", ["a knob turn"]), input_tokens=1, output_tokens=1)
        return Reply("A note: nothing learned yet." if request.task == "note" else "ready", input_tokens=1, output_tokens=1)

    fake.answer_with(answer)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_hybrid_swarm_gives_the_llm_slots_after_the_warm_up_and_stops_spending_at_its_budget(tmp_path: Path) -> None:
    with FakeLLM() as fake:
        hybrid_script(fake)
        env = {**os.environ, "SWARM_HARNESS__SIM_SECONDS": "0.1", "SWARM_BOARD__LEASE_SECONDS": "5",
               "SWARM_BRAIN__BASE_URL": fake.url, "SWARM_BRAIN__MODEL": "fake-model", "ANTHROPIC_API_KEY": SECRET,
               "SWARM_BRAIN__HYBRID_SHARE": "1.0", "SWARM_BRAIN__BUDGET_USD": str(BUDGET_USD),
               "SWARM_BRAIN__PRICE_INPUT_PER_MTOK": "10", "SWARM_BRAIN__PRICE_OUTPUT_PER_MTOK": "10"}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "swarm", "up", "--dir", str(tmp_path / "swarm"), "--tier", "sim",
                               "--brain", "hybrid", "--max-runs", "30", "--no-view"],
                              capture_output=True, text=True, env=env, timeout=840)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    board = duckdb.connect(str(tmp_path / "swarm" / "board.duckdb"), read_only=True)
    finished = sorted(t for (t,) in board.execute("SELECT epoch(finished_at) FROM runs WHERE status = 'ok' "
                                                  "AND purpose = 'explore'").fetchall())  # fmt: skip
    asked = sorted(r.at for r in fake.for_task("ideas"))
    assert asked, done.stdout[-3000:]
    # Every trial here turns knobs (the baseline's too): the warm-up is N_STARTUP of them finished, ok or failed.
    trials = [t for (t,) in board.execute("SELECT min(epoch(finished_at)) FROM runs WHERE finished_at IS NOT NULL "
                                          "AND status NOT IN ('lost', 'refused') GROUP BY patch").fetchall()]  # fmt: skip
    assert sum(t <= asked[0] for t in trials) >= N_STARTUP  # the LLM's first slot came after the optimiser's warm-up
    llm_runs = board.execute("SELECT count(*) FROM runs r JOIN hypotheses h USING (hypothesis) "
                             "WHERE h.title LIKE 'LLM idea %' AND r.status = 'ok'").fetchone()[0]  # fmt: skip
    assert llm_runs >= 1  # its ideas were queued, implemented and run
    agents = board.execute("SELECT count(DISTINCT agent) FROM usage").fetchone()[0]
    spent = board.execute("SELECT sum(cost_usd) FROM usage").fetchone()[0]
    assert BUDGET_USD <= spent <= BUDGET_USD + agents * CALL_USD + 1e-9  # at most one call in flight per agent
    assert len(asked) <= round(BUDGET_USD / CALL_USD) + agents
    after = sum(t > asked[-1] for t in finished)
    assert after >= 1  # the swarm went on, the optimiser's ideas alone, once the money was spent
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "swarm" / "logs").glob("*.log"))
    assert "the swarm's LLM budget is spent; answering as the offline brain from now on" in logs
    assert (f"LLM spend: {spent:.4f} USD of the {BUDGET_USD:.4f} USD budget: the budget is spent, the brains "
            "answered as the offline brain from then on") in done.stdout  # fmt: skip
