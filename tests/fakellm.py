"""A fake LLM server for tests: the Anthropic Messages and OpenAI Chat Completions wire formats.

The real SDKs talk to it through `base_url`, so everything but the model itself is exercised:
HTTP, auth headers, retries on 429/5xx, response parsing, usage. Answers are scripted:

    fake.on("ideas", ideas_answer([{"title": "...", "rationale": "...", "intent": {...}}]))
    fake.on("implement", code_answer(new_train_py))
    fake.on("review", verdict_answer("approve", ["faithful and small"]))

`on(task, ...)` keys on the `Task: <kind>` line that agents.brains.prompts puts first in every
request (ideas, implement, repair, review); `push(...)` queues answers for any request; and
`answer_with(fn)` answers with a function of the Request. Queued answers are used in order and
the last one repeats. An answer is a string (the text), or a Reply (an HTTP error status, a delay,
token counts, a cut-off answer). `fail(429, times=2)` makes the next requests fail first;
`delay` slows every answer (a benchmark's 5 s brain). `models` names the models it serves (None:
any): a request for another one gets the 404 each provider really answers for an unknown model
(Anthropic's not_found_error, OpenAI's model_not_found). Every request is kept in `requests`.

Use the `fake_llm` fixture, or `with FakeLLM() as fake:`; point the brain at `fake.url`
(Anthropic) or `fake.openai_url` (OpenAI, which includes /v1).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Reply:
    text: str = ""
    status: int = 200  # an HTTP error status (400, 429, 500, 529) instead of an answer
    delay: float = 0.0  # seconds to wait before answering, on top of the server's delay
    input_tokens: int | None = None  # None: about a token per 4 characters of the request
    output_tokens: int | None = None  # None: about a token per 4 characters of the text
    stop: str = "end"  # "end", or "max_tokens" for an answer cut off at the limit
    thinking: str | None = None  # Anthropic: a thinking block before the text, as current models send


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    at: float = field(default_factory=time.time)  # when it arrived, by the wall clock the board's events carry

    @property
    def format(self) -> str:
        return "anthropic" if self.path.endswith("/messages") else "openai"

    @property
    def system(self) -> str:
        if self.format == "anthropic":
            return _text(self.body.get("system", ""))
        messages = self.body.get("messages", [])
        return "".join(_text(m["content"]) for m in messages if m.get("role") in ("system", "developer"))

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation without the system prompt, as {role, content} with text content."""
        return [{"role": m["role"], "content": _text(m.get("content", ""))} for m in self.body.get("messages", [])
                if m.get("role") not in ("system", "developer")]  # fmt: skip

    @property
    def text(self) -> str:
        """The last user message."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""

    @property
    def task(self) -> str | None:
        """ideas, implement, repair or review: the `Task:` line that starts the first user message."""
        first = next((m["content"] for m in self.messages if m["role"] == "user"), "")
        line = first.split("\n", 1)[0]
        return line.removeprefix("Task:").strip() if line.startswith("Task:") else None

    @property
    def title(self) -> str | None:
        """The hypothesis' title, in an implement, repair or review request."""
        first = next((m["content"] for m in self.messages if m["role"] == "user"), "")
        for line in first.splitlines():
            if line.startswith("title: "):
                return line.removeprefix("title: ").strip()
        return None

    @property
    def attempt(self) -> int:
        """1 for a first request, 2 for the retry after a bad answer, ..."""
        return sum(m["role"] == "user" for m in self.messages)


Answer = str | Reply | Callable[[Request], "str | Reply"]


class FakeLLM:
    def __init__(self, delay: float = 0.0, models: set[str] | None = None) -> None:
        self.delay = delay
        self.models = models
        self.requests: list[Request] = []
        self._queue: list[Answer] = []
        self._tasks: dict[str, list[Answer]] = {}
        self._fn: Callable[[Request], str | Reply] | None = None
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fakellm", daemon=True)

    @property
    def url(self) -> str:
        """The base URL for the Anthropic SDK (it adds /v1/messages)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        """The base URL for the OpenAI SDK (it adds /chat/completions)."""
        return self.url + "/v1"

    def push(self, *answers: Answer) -> FakeLLM:
        with self._lock:
            self._queue.extend(answers)
        return self

    def on(self, task: str, *answers: Answer) -> FakeLLM:
        with self._lock:
            self._tasks.setdefault(task, []).extend(answers)
        return self

    def answer_with(self, fn: Callable[[Request], str | Reply]) -> FakeLLM:
        self._fn = fn
        return self

    def fail(self, status: int, times: int = 1) -> FakeLLM:
        with self._lock:
            self._failures.extend([status] * times)
        return self

    def for_task(self, task: str) -> list[Request]:
        return [r for r in self.requests if r.task == task]

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.models is not None and request.body.get("model") not in self.models:
                return Reply(status=404, text=unknown_model(request))
            if self._failures:
                return Reply(status=self._failures.pop(0))
            queue = self._tasks.get(request.task or "") or self._queue
            answer: Answer | None = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else self._fn
        if answer is None:
            return Reply(status=400, text=f"fake LLM: nothing scripted for this request (task {request.task})")
        if callable(answer):
            answer = answer(request)
        return answer if isinstance(answer, Reply) else Reply(text=answer)


def ideas_answer(ideas: list[dict[str, Any]]) -> str:
    """An ideator's answer: the ideas as a JSON list in a fenced block."""
    return "Here are my proposals.\n\n```json\n" + json.dumps(ideas, indent=2) + "\n```\n"


def unknown_model(request: Request) -> str:
    """The message each provider gives for a model it does not serve (Anthropic's names the field)."""
    model = request.body.get("model")
    if request.format == "anthropic":
        return f"model: {model}"
    return f"The model `{model}` does not exist or you do not have access to it."


def code_answer(code: str, note: str = "Changed what the hypothesis asks for.") -> str:
    """An implementer's answer: the whole train.py in a python block, then a note."""
    return f"```python\n{code.rstrip()}\n```\n{note}\n"


def verdict_answer(verdict: str, reasons: list[str]) -> str:
    """A reviewer's answer: the verdict as JSON in a fenced block."""
    return "```json\n" + json.dumps({"verdict": verdict, "reasons": reasons}) + "\n```\n"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def _text(content: Any) -> str:
    """Text of a message's content: a string, or a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _anthropic(request: Request, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.thinking is not None:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": uuid.uuid4().hex})
    content.append({"type": "text", "text": reply.text, "citations": None})
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": request.body.get("model", "fake"), "content": content,
            "stop_reason": "max_tokens" if reply.stop == "max_tokens" else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": _input_tokens(request, reply), "output_tokens": _output_tokens(reply),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "service_tier": "standard"}}  # fmt: skip


def _openai(request: Request, reply: Reply) -> dict[str, Any]:
    prompt, completion = _input_tokens(request, reply), _output_tokens(reply)
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": request.body.get("model", "fake"), "system_fingerprint": "fp_fake", "service_tier": "default",
            "choices": [{"index": 0, "logprobs": None,
                         "finish_reason": "length" if reply.stop == "max_tokens" else "stop",
                         "message": {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}}  # fmt: skip


def _error(request: Request, reply: Reply) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_error", 529: "overloaded_error"}  # fmt: skip
    kind = kinds.get(reply.status, "api_error")
    message = reply.text or f"fake LLM: scripted HTTP {reply.status}"
    if request.format == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": _request_id()}
    if reply.status == 404:  # OpenAI's words for an unknown model
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def _input_tokens(request: Request, reply: Reply) -> int:
    if reply.input_tokens is not None:
        return reply.input_tokens
    return _tokens(request.system + "".join(m["content"] for m in request.messages))


def _output_tokens(reply: Reply) -> int:
    return reply.output_tokens if reply.output_tokens is not None else _tokens((reply.thinking or "") + reply.text)


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                body = {}
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if self.path.rstrip("/") not in ("/v1/messages", "/v1/chat/completions"):
                return self._send(404, {"error": {"message": f"fake LLM: no endpoint {self.path}"}})
            if body.get("stream"):
                return self._send(400, _error(request, Reply(status=400, text="fake LLM: streaming is not supported")))
            reply = fake._answer(request)
            time.sleep(fake.delay + reply.delay)
            if reply.status != 200:
                return self._send(reply.status, _error(request, reply), {"retry-after-ms": "10"})
            self._send(200, _anthropic(request, reply) if request.format == "anthropic" else _openai(request, reply))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id" if self.path.endswith("/messages") else "x-request-id", _request_id())
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output is not the place for an access log

    return Handler
