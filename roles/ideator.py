"""The ideator: reads an arena's best code and everything tried there, proposes hypotheses.

It keeps a few approved ideas waiting per implementer (`agents.ideas_ahead`) and holds back
beyond that, so ideas are made from recent results rather than queued far ahead of them. When the
queue is short it asks its brain for the whole shortfall in one call (at most BATCH ideas):
building the context (its reads, made concurrently) and the optimiser's model is most of a
proposal's cost, so one ideator keeps many devices fed, where one idea per call made 1.1 ideas a
second against the 6.4 that 64 devices of 10 s runs need. Batching was chosen over more ideators
started by demand: it costs no process, and TPE's constant liar spreads the ideas of one call as
it spreads those of several ideators (`--ideators` still adds some). A patch's code never
changes, so its knobs are parsed once per ideator (`Parsed`): a context then costs the same work
however long the history. What its brain sees is the desk (agents.brains.desk): every trial with
its outcome, metrics, rationale and diff, the tier, the contract, what is queued now, what was
refused and the latest lab note. An idea that repeats a trial or a queued idea
(agents.brains.novelty) is refused before it is queued, with a pointer; an LLM brain gets it back
once to propose something else. Every `agents.note_every` finished trials it asks its brain for a
lab-notebook note (NoteWritten)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from agents.brains import novelty
from agents.brains.desk import metrics_of, tier_block
from agents.brains.base import BrainError, Idea, IdeaContext, Trial
from agents.knobs import KnobError
from agents.knobs import changes as knob_changes
from agents.knobs import read as read_knobs
from agents.runtime import Context, Role
from blackboard.events import HypothesisProposed, NoteWritten, new_id
from harness import tiers
from roles.common import contract_text, program

log = logging.getLogger(__name__)
IDLE_SECONDS = 2.0
BATCH = 32  # ideas asked of the brain in one call, at most: a context costs seconds of service reads at 64 devices


class Ideator(Role):
    name = "ideator"
    slots_per_agent = 32  # one ideator proposes a batch of up to 32 ideas per context: one per 32 devices by default

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.parsed = Parsed()  # each patch's knobs, parsed once: a patch's code never changes

    async def run(self) -> None:
        ctx = self.ctx
        self.program = program(self.name)
        self.codes: dict[str, str] = {}  # patch -> code: code never changes, so it is fetched once
        self.refused: list[str] = []
        while not ctx.stopping:
            stats = await ctx.board.stats()
            arenas = [a for a in stats.get("arenas", []) if a.get("best") and self._ideates(a["arena"], stats.get("ladder") or [])]
            want = self._wanted(stats)
            busy = False
            for arena in arenas:
                if ctx.stopping:
                    break
                short = want - arena.get("queued", {}).get("implement", 0)
                if short > 0:
                    busy = await self._propose(arena, min(short, BATCH)) or busy
            if not busy:
                ctx.say("waiting: enough ideas are queued" if arenas else "waiting for an arena's baseline")
                await asyncio.sleep(IDLE_SECONDS)

    def _ideates(self, arena: str, ladder: list[str]) -> bool:
        """New ideas go to the ladder's lowest rung; the upper rungs get what climbs (unless agents.ideate_upper)."""
        tier = arena.split("/", 1)[0]
        return not ladder or tier not in ladder[1:] or self.ctx.settings.agents.ideate_upper

    def _wanted(self, stats: dict[str, Any]) -> int:
        implementers = sum(1 for agent in stats.get("agents", []) if agent.get("role") == "implementer") or 1
        return self.ctx.settings.agents.ideas_ahead * implementers

    async def _propose(self, arena: dict[str, Any], n: int = 1) -> bool:
        """Ask the brain for `n` ideas for `arena` and propose the new ones; whether it had any."""
        ctx = self.ctx
        context, desk = await self._context(arena["arena"], n)
        if note := await self._write_note(context, desk):
            context = context.model_copy(update={"note": note})
        ctx.say(f"thinking about {arena['arena']} ({len(context.trials)} trials so far)")
        before = novelty.earlier(context, desk["pending"])
        try:
            ideas = await ctx.brain.ideas(context)  # type: ignore[union-attr]
            fresh, refused = self._novel(ideas, context, before)
            if refused and ctx.brain.name != "offline":  # type: ignore[union-attr]
                # Sent back once with the pointers, so the model can propose something else instead.
                again = context.model_copy(update={"refused": context.refused + refused, "n": len(refused)})
                fresh += self._novel(await ctx.brain.ideas(again), again, before)[0]  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: no ideas this time: %s", ctx.spec.agent, exc)
            await asyncio.sleep(IDLE_SECONDS)
            return False
        if ctx.spec.burst is not None:  # a burst ends after its count of ideas: propose no more than that
            fresh = fresh[: max(0, ctx.spec.burst - ctx.done)]
        events = [HypothesisProposed(by=ctx.spec.agent, hypothesis=new_id("h"), arena=arena["arena"],
                                     parent=idea.parent or context.best_patch, title=idea.title[:300],
                                     rationale=idea.rationale[:4000], intent=idea.intent) for idea in fresh]  # fmt: skip
        # All at once: each is a round trip to the service, and a batch of them one after another took seconds under load.
        verdicts = await asyncio.gather(*(ctx.board.propose(event) for event in events))
        for idea, verdict in zip(fresh, verdicts):
            if verdict.ok:
                ctx.say(f"proposed {idea.title!r}")
            else:
                ctx.say(f"{idea.title!r} was {verdict.status}: {verdict.reason}")  # the desk shows it from now on
            ctx.count()
        return bool(ideas)

    def _novel(self, ideas: list[Idea], context: IdeaContext, before: list[novelty.Earlier]) -> tuple[list[Idea], list[str]]:
        """The ideas that are new, and a line with a pointer for each one that is not (kept for the next contexts)."""
        fresh, refused = [], []
        for idea in ideas:
            why = novelty.duplicate(idea, context, before)
            if why is None:
                fresh.append(idea)
                before.append(novelty.Earlier("(this round)", idea.title, novelty.words_of(idea),
                                              novelty.resulting_config(idea.intent, idea.parent, context)))  # fmt: skip
                continue
            line = f"{idea.title!r}: refused before queueing, {why}"
            self.ctx.say(line)
            refused.append(line)
        self.refused = (self.refused + refused)[-20:]
        return fresh, refused

    async def _write_note(self, context: IdeaContext, desk: dict[str, Any]) -> str | None:
        """Every `agents.note_every` finished trials, the brain distils the arena's lessons into a note
        (the offline brain writes none). Its id names the arena and the count, so two ideators that
        both decide to write it store one note."""
        every, done = self.ctx.settings.agents.note_every, len(desk["trials"])
        last = (desk.get("note") or {}).get("trials", 0)
        if not every or done < last + every:
            return None
        try:
            note = await self.ctx.brain.note(context)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: no lab note this time: %s", self.ctx.spec.agent, exc)
            return None
        if note:
            key = hashlib.sha256(f"{context.arena}/{done // every}".encode()).hexdigest()[:20]
            await self.ctx.board.publish(NoteWritten(id=f"e-note-{key}", by=self.ctx.spec.agent, arena=context.arena,
                                                     trials=done, note=note[:4000]))  # fmt: skip
            self.ctx.say(f"wrote a lab note on {context.arena} after {done} trials")
        return note

    async def _context(self, arena: str, n: int = 1) -> tuple[IdeaContext, dict[str, Any]]:
        """What the brain sees, and the desk read it was made from (its pending rows feed novelty)."""
        board = self.ctx.board
        best, trials, desk = await asyncio.gather(board.best(arena), board.ask("trials", {"arena": arena}),
                                                  board.ask("desk", {"arena": arena}, timeout=30))  # fmt: skip
        best = best or {}
        rows = {row["patch"]: row for row in desk["trials"]}
        wanted = {t["patch"] for t in trials} | {t["parent"] for t in trials if t.get("parent")}
        missing = sorted(wanted - set(self.codes))
        for start in range(0, len(missing), 50):
            self.codes.update(await board.ask("codes", {"patches": missing[start : start + 50]}))
        tier = tiers.TIERS.get(arena.split("/", 1)[0])
        for row in desk["pending"]:
            row["intent"] = json.loads(row["intent"]) if isinstance(row.get("intent"), str) else row.get("intent") or {}
        return IdeaContext(
            arena=arena, tier=arena.split("/", 1)[0], program=self.program, best_patch=best.get("patch", ""),
            best_code=best.get("code", ""), best_mean=best.get("mean"), spread=best.get("spread"),
            trials=[_trial(t, self.codes, rows.get(t["patch"], {}), self.parsed) for t in trials],
            refused=self.refused + [_refusal(r) for r in desk["refused"]],
            pending=[f"{p['title']!r}{' (being implemented)' if p['in_flight'] else ' (queued)'}" for p in desk["pending"]],
            note=(desk.get("note") or {}).get("note", ""), tier_info=tier_block(tier, arena), contract=contract_text(),
            context_len=tier.context_len if tier else None, n=n,
        ), desk  # fmt: skip


class Parsed:
    """Each patch's knobs and whether it changed more than knobs, parsed once: parsing a train.py
    costs milliseconds, and every context holds every trial of the arena."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[dict[str, Any], bool]] = {}
        self.parses = 0  # patches parsed so far: the work, which grows with new trials only

    def of(self, patch: str, codes: dict[str, str], parent: str | None) -> tuple[dict[str, Any], bool]:
        """Its knobs and code-change flag; kept once its code (and its parent's, if it has one) is known."""
        if patch in self.known:
            return self.known[patch]
        found = self._parse(codes.get(patch, ""), codes.get(parent or ""))
        if patch in codes and (not parent or parent in codes):
            self.known[patch] = found
        return found

    def _parse(self, code: str, parent: str | None) -> tuple[dict[str, Any], bool]:
        self.parses += 1
        try:
            knobs = read_knobs(code)
        except KnobError:
            knobs = {}  # code that is not plain knobs (an LLM's rewrite) still counts as a trial
        return knobs, parent is not None and knob_changes(parent, code) is None  # more than knob values moved


def _trial(row: dict[str, Any], codes: dict[str, str], seen: dict[str, Any], parsed: Parsed | None = None) -> Trial:
    """A trial from the decision state's row, with what the projection adds: verdicts, metrics, rationale, diff."""
    knobs, code_change = (parsed or Parsed()).of(row["patch"], codes, row.get("parent"))
    return Trial(knobs=knobs, code_change=code_change, std=seen.get("std"), outcome=seen.get("outcome"),
                 explanation=seen.get("explanation") or "", rejected=seen.get("rejected") or [],
                 rationale=seen.get("rationale") or "", diff=seen.get("diff") or "", metrics=metrics_of(seen),
                 **{k: row[k] for k in ("patch", "title", "status", "val_bpb", "n", "reason", "best")})  # fmt: skip


def _refusal(row: dict[str, Any]) -> str:
    pointer = f" (duplicate of {row['duplicate_of']})" if row.get("duplicate_of") else ""
    return f"{row.get('title') or 'an idea'!r}: {row.get('reason') or 'refused'}{pointer}"
