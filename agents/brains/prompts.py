"""What LLM brains send and how they read the answers, for every provider alike.

A request is a system prompt (the role's program from roles/<role>.md, plus the harness contract
where code is written or judged) and one user message that starts with the line `Task: <kind>`
(ideas, implement, repair, review) so logs and test servers can tell requests apart, then the
material, then the answer format from roles/answers.md. The parsers turn answers into records or
raise AnswerError with a message meant for the model: the brain sends it back for one retry.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from agents import knobs
from agents.brains.base import (
    BrainError,
    Idea,
    IdeaContext,
    Implementation,
    ImplementTask,
    RepairTask,
    ReviewTask,
    ReviewVerdict,
)
from agents.brains import desk
from agents.brains.optimiser import Proposal, history, title
from harness import syntax

NOTE_WORDS = 250  # a lab note's length: read by every ideator on every call
MAX_LOG = 4000  # characters of a failed run's log tail in a repair prompt
EDIT = re.compile(r"<<<<<<< SEARCH\n(.*?)\n=======\n(.*?)\n?>>>>>>> REPLACE", re.S)
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)\n?```", re.S)


class AnswerError(BrainError):
    """The model's answer is not in the format asked; the message says what is wrong."""


class Declined(BrainError):
    """The model answered that the hypothesis cannot work: no repair, and no more attempts."""


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str


def ideas(context: IdeaContext, optimiser: str | None = None) -> Prompt:
    """The ideator's request, within `context.budget_tokens`: the desk (agents.brains.desk) with the
    tier, the contract, the notebook, what is queued now and what was refused; `optimiser` is the
    hybrid brain's view of the optimiser's state."""
    return _desk("ideas", context, optimiser, _format("ideas", n=context.n))


def note(context: IdeaContext) -> Prompt:
    """The lab notebook's request: the same desk as an idea's, asking what the arena has learned."""
    return _desk("note", context, None, _format("note", words=NOTE_WORDS))


def _desk(kind: str, context: IdeaContext, optimiser: str | None, answer: str) -> Prompt:
    system = _system(context.program, context.contract) if context.contract else context.program
    parts = [f"Arena {context.arena}, tier {context.tier}.",
             f"Best patch {context.best_patch}: val_bpb {_num(context.best_mean)}, seed spread {_num(context.spread)}.",
             _section("The tier: fixed facts every idea must fit", context.tier_info or "unknown"),
             _section("The lab notebook: the latest note", context.note or "no note yet"),
             _section("The arena's best train.py", _fenced(context.best_code, "python"))]  # fmt: skip
    if context.pending:
        pending = "\n".join(f"- {p}" for p in context.pending)
        parts.append(_section("Queued or being implemented now: do not propose these again", pending))
    if context.refused:
        refused = "\n".join(f"- {t}" for t in context.refused)
        parts.append(_section("Refused as duplicates: do not propose these again", refused))
    if optimiser:
        parts.append(_section("The optimiser's view", optimiser))
    parts.append(answer)
    room = context.budget_tokens * desk.CHARS_PER_TOKEN - len(system) - len(_user(kind, parts)) - 100
    parts.insert(5, _section("Tried so far, oldest first", desk.trials_section(context, room)))
    return Prompt(system, _user(kind, parts))


def parse_note(text: str) -> str:
    note = FENCE.sub(lambda m: m.group(2), text).strip()
    if not note:
        raise AnswerError("the note is empty; write what the arena has learned")
    return note[: NOTE_WORDS * 10]


def implement(task: ImplementTask) -> Prompt:
    parts = [_hypothesis(task), _section("The parent train.py", _fenced(task.parent_code, "python")),
             _format("implement")]
    return Prompt(_system(task.program, task.contract), _user("implement", parts))


def repair(task: RepairTask, follow_up: bool = False) -> Prompt:
    """A repair request; `follow_up`: a later attempt in the hypothesis' conversation, which has the
    hypothesis and the earlier attempts already."""
    log = task.log_tail[-MAX_LOG:] or "(empty)"
    what = task.facts or f"status: {task.status}\nreason: {task.reason}"
    parts = [] if follow_up else [_hypothesis(task)]
    parts += [_section(f"Attempt {task.attempt}: the train.py that failed" + (", your last repair" if follow_up else ""),
                       _fenced(task.code, "python")),
              _section("What happened", what), _section("The end of its log", _fenced(log, "text")),
              _format("repair")]  # fmt: skip
    return Prompt(_system(task.program, task.contract), _user("repair", parts))


def review(task: ReviewTask, static: ReviewVerdict) -> Prompt:
    """The reviewer's request; `static` is what the static rules concluded, shown as evidence."""
    results = (f"candidate runs: {_nums(task.values)}\narena best runs: {_nums(task.best_values)}\n"
               f"seed spread: {_num(task.spread)}")  # fmt: skip
    problems = "\n".join(f"- {p}" for p in task.problems) or "none"
    rules = f"verdict: {static.verdict}\n" + "\n".join(f"- {r}" for r in static.reasons)
    measured = (f"candidate: {desk.metrics_text(task.metrics) if task.metrics else 'nothing measured yet'}\n"
                f"parent: {desk.metrics_text(task.parent_metrics) if task.parent_metrics else 'nothing measured'}")
    similar = "\n".join(f"- {s}" for s in task.similar) or "none"
    parts = [_hypothesis(task), _section("The parent train.py", _fenced(task.parent_code, "python")),
             _section("The diff", _fenced(task.diff, "diff")),
             _section("The new train.py", _fenced(task.code, "python")), _section("Results so far", results),
             _section("What the harness measured (means over ok runs)", measured),
             _section("Similar earlier trials in this arena", similar),
             _section("Problems found by the static checks", problems),
             _section("What the static rules conclude", rules), _format("review")]  # fmt: skip
    return Prompt(_system(task.program, task.contract), _user("review", parts))


def retry(error: str) -> str:
    return _format("retry", error=error)


def cut_off(limit: int, room: int) -> str:
    return _format("cut_off", limit=limit, room=room)


def preflight(problem: str) -> str:
    return _format("preflight", problem=problem[:MAX_LOG])


def parse_repair(text: str, failed: str) -> Implementation:
    """A repair's edits against the failed code; Declined when the model says the idea cannot work."""
    if (match := re.match(r"\s*DECLINE:\s*(.*)", text, re.S)) is not None:
        raise Declined(" ".join(match.group(1).split())[:500] or "the model declined without a reason")
    return parse_edits(text, failed)


def parse_edits(text: str, parent: str) -> Implementation:
    """The new train.py: `parent` with the answer's SEARCH/REPLACE edits applied in order, or, when
    the answer has none, the whole file it holds (parse_code)."""
    edits = EDIT.findall(text)
    if not edits:
        return parse_code(text)
    code = parent
    for i, (search, replace) in enumerate(edits, 1):
        found = code.count(search) if search.strip() else 0
        if found != 1:
            where = "is not in" if not found else f"occurs {found} times in"
            raise AnswerError(f"edit {i}: its SEARCH text {where} the train.py it edits; copy the lines exactly, "
                              f"whitespace included, with enough of them to be unique: {search[:300]!r}")  # fmt: skip
        code = code.replace(search, replace, 1)
    _valid(code)
    return Implementation(code=code, notes=EDIT.sub("", text).strip()[:500])


def optimiser_view(context: IdeaContext, proposals: list[Proposal]) -> str:
    """The optimiser's state for the hybrid brain: best configurations, recent trials, its suggestions."""
    best = knobs.read(context.best_code)
    ok = sorted((t for t in context.trials if t.val_bpb is not None), key=lambda t: t.val_bpb or 0.0)
    lines = ["Best configurations (knobs that differ from the arena's best):"]
    lines += [f"- {_num(t.val_bpb)} (n={t.n}) {desk.delta(t.knobs, best)}" for t in ok[:5]] or ["- none yet"]
    lines.append("Most recent trials:")
    lines += [f"- {t.status} {_num(t.val_bpb)} {desk.delta(t.knobs, best)}" for t in context.trials[-10:]] or ["- none yet"]
    lines.append("The search space (knob: kind, range searched around the best):")
    lines += [f"- {d.name}: {d.kind}, {knobs.render(d.from_unit(d.low))} .. {knobs.render(d.from_unit(d.high))}"
              for d in history(context).dims] or ["- no tunable knobs"]  # fmt: skip
    lines.append("The optimiser (TPE) would propose:")
    lines += [f"- {title(p.changes, p.before)}: {p.evidence}" for p in proposals] or ["- nothing new to propose"]
    lines.append("Propose something better than the optimiser can: a knob move it does not see, or a code change.")
    return "\n".join(lines)


def parse_ideas(text: str, context: IdeaContext) -> list[Idea]:
    data = _json(text, list)
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("title"), str) or not item["title"].strip():
            raise AnswerError(f"item {i} of the list is not an object with a non-empty string title")
        intent = item.get("intent") or {}
        if not isinstance(intent, dict) or not (intent.get("knobs") or intent.get("change")):
            raise AnswerError(f"idea {item['title']!r} has no intent with knobs or a change")
        if "knobs" in intent and not isinstance(intent["knobs"], dict):
            raise AnswerError(f"idea {item['title']!r}: intent.knobs must be an object of NAME -> value")
        parent = item.get("parent") if item.get("parent") in {t.patch for t in context.trials} else context.best_patch
        rationale = str(item.get("rationale", ""))
        out.append(Idea(title=item["title"].strip(), rationale=rationale, intent=intent, parent=parent))
    if not out:
        raise AnswerError("the list is empty; propose at least one idea")
    return out[: context.n]


def parse_code(text: str) -> Implementation:
    blocks = [body for lang, body in FENCE.findall(text) if lang.lower() in ("python", "py", "")]
    if not blocks:
        raise AnswerError("no ```python fenced block with the whole train.py in the answer")
    code = max(blocks, key=len).strip("\n") + "\n"  # the file, not a snippet quoted around it
    _valid(code)
    notes = FENCE.sub("", text).strip()
    return Implementation(code=code, notes=notes[:500])


def _valid(code: str) -> None:
    """AnswerError unless `code` parses and defines train(run) at the top level."""
    try:
        tree = syntax.parse(code)
    except SyntaxError as exc:
        raise AnswerError(f"the train.py in the answer does not parse: {exc.msg} at line {exc.lineno}") from exc
    if not any(isinstance(node, ast.FunctionDef) and node.name == "train" for node in tree.body):
        raise AnswerError("the train.py in the answer defines no top-level function train(run): send the whole file")


def parse_verdict(text: str) -> ReviewVerdict:
    data = _json(text, dict)
    verdict = str(data.get("verdict", "")).strip().lower()
    if verdict not in ("approve", "reject"):
        raise AnswerError(f'verdict must be "approve" or "reject", not {data.get("verdict")!r}')
    reasons = data.get("reasons", [])
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list) or not reasons:
        raise AnswerError("reasons must be a non-empty list of sentences")
    return ReviewVerdict(verdict=verdict, reasons=[str(r) for r in reasons])  # type: ignore[arg-type]


def _json(text: str, kind: type) -> Any:
    """The JSON value of the kind asked: from a ```json block, else from the first bracket on."""
    candidates = [body for lang, body in FENCE.findall(text) if lang.lower() in ("json", "")]
    opener = "[" if kind is list else "{"
    if opener in text:
        candidates.append(text[text.index(opener) : text.rindex("]" if kind is list else "}") + 1])
    error = "no JSON in the answer"
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            error = f"the JSON does not parse: {exc}"
            continue
        if isinstance(value, kind):
            return value
        error = f"expected a JSON {'list' if kind is list else 'object'}, got {type(value).__name__}"
    raise AnswerError(error)


@cache
def _formats() -> dict[str, str]:
    text = resources.files("roles").joinpath("answers.md").read_text()
    sections = re.split(r"^## +(\w+)[ \t]*\n", text, flags=re.M)
    return {name: body.strip() for name, body in zip(sections[1::2], sections[2::2])}


def _format(kind: str, **values: Any) -> str:
    text = _formats()[kind]
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def _system(program: str, contract: str) -> str:
    return f"{program.strip()}\n\n# The harness contract\n\n{contract.strip()}\n"


def _user(kind: str, parts: list[str]) -> str:
    return f"Task: {kind}\n\n" + "\n\n".join(parts)


def _section(title: str, body: str) -> str:
    return f"## {title}\n{body}"


def _fenced(text: str, lang: str) -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _hypothesis(task: ImplementTask | ReviewTask) -> str:
    intent = json.dumps(task.intent, default=list) if task.intent else "{}"
    return _section("The hypothesis", f"title: {task.title}\nrationale: {task.rationale}\nintent: {intent}")


def _num(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4f}"


def _nums(xs: list[float]) -> str:
    return ", ".join(f"{x:.4f}" for x in xs) or "none yet"
