"""The ideator: reads an arena's best code and everything tried there, proposes hypotheses.

It keeps a few approved ideas waiting per implementer (`agents.ideas_ahead`) and holds back
beyond that, so ideas are made from recent results rather than queued far ahead of them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.brains.base import BrainError, IdeaContext, Trial
from agents.knobs import KnobError
from agents.knobs import changes as knob_changes
from agents.knobs import read as read_knobs
from agents.runtime import Role
from blackboard.events import HypothesisProposed, new_id
from harness import tiers
from roles.common import program

log = logging.getLogger(__name__)
IDLE_SECONDS = 2.0


class Ideator(Role):
    name = "ideator"

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
                if arena.get("queued", {}).get("implement", 0) < want:
                    busy = await self._propose(arena) or busy
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

    async def _propose(self, arena: dict[str, Any]) -> bool:
        ctx = self.ctx
        context = await self._context(arena["arena"])
        ctx.say(f"thinking about {arena['arena']} ({len(context.trials)} trials so far)")
        try:
            ideas = await ctx.brain.ideas(context)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: no ideas this time: %s", ctx.spec.agent, exc)
            await asyncio.sleep(IDLE_SECONDS)
            return False
        for idea in ideas:
            event = HypothesisProposed(by=ctx.spec.agent, hypothesis=new_id("h"), arena=arena["arena"],
                                       parent=idea.parent or context.best_patch, title=idea.title[:300],
                                       rationale=idea.rationale[:4000], intent=idea.intent)  # fmt: skip
            verdict = await ctx.board.propose(event)
            if verdict.ok:
                ctx.say(f"proposed {idea.title!r}")
            else:
                ctx.say(f"{idea.title!r} was {verdict.status}: {verdict.reason}")
                self.refused = (self.refused + [idea.title])[-20:]
            ctx.count()
            if ctx.stopping:
                break
        return bool(ideas)

    async def _context(self, arena: str) -> IdeaContext:
        board = self.ctx.board
        best = await board.best(arena) or {}
        trials = await board.ask("trials", {"arena": arena})
        wanted = {t["patch"] for t in trials} | {t["parent"] for t in trials if t.get("parent")}
        missing = sorted(wanted - set(self.codes))
        for start in range(0, len(missing), 50):
            self.codes.update(await board.ask("codes", {"patches": missing[start : start + 50]}))
        return IdeaContext(
            arena=arena, tier=arena.split("/", 1)[0], program=self.program, best_patch=best.get("patch", ""),
            best_code=best.get("code", ""), best_mean=best.get("mean"), spread=best.get("spread"),
            trials=[_trial(t, self.codes) for t in trials], refused=list(self.refused),
            context_len=tier.context_len if (tier := tiers.TIERS.get(arena.split("/", 1)[0])) else None, n=1,
        )  # fmt: skip


def _trial(row: dict[str, Any], codes: dict[str, str]) -> Trial:
    code = codes.get(row["patch"], "")
    try:
        knobs = read_knobs(code)
    except KnobError:
        knobs = {}  # code that is not plain knobs (an LLM's rewrite) still counts as a trial
    parent = codes.get(row.get("parent") or "")
    code_change = parent is not None and knob_changes(parent, code) is None  # more than knob values moved
    return Trial(knobs=knobs, code_change=code_change,
                 **{k: row[k] for k in ("patch", "title", "status", "val_bpb", "n", "reason", "best")})  # fmt: skip
