"""The fake LLM server's own promises, which the swarm's end-to-end tests rely on."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.fakellm import FakeLLM, Reply, Request


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def messages(task: str, title: str = "") -> dict:
    text = f"Task: {task}\n\n## The hypothesis\ntitle: {title}\nrationale: r"
    return {"model": "m", "max_tokens": 10, "system": "sys", "messages": [{"role": "user", "content": text}]}


def test_answers_are_routed_by_task_and_the_last_one_repeats(fake_llm: FakeLLM) -> None:
    fake_llm.on("ideas", "first idea", "second idea").on("review", "a verdict")
    texts = [post(fake_llm.url + "/v1/messages", messages(task))[1]["content"][0]["text"]
             for task in ("ideas", "review", "ideas", "ideas", "review")]  # fmt: skip
    assert texts == ["first idea", "a verdict", "second idea", "second idea", "a verdict"]
    assert [r.task for r in fake_llm.requests] == ["ideas", "review", "ideas", "ideas", "review"]


def test_a_function_answers_by_looking_at_the_request(fake_llm: FakeLLM) -> None:
    def answer(request: Request) -> str:
        return f"code for {request.title}" if request.task == "implement" else "other"

    fake_llm.answer_with(answer)
    body = {"model": "m", "messages": [{"role": "system", "content": "sys"},
                                       *messages("implement", "Deeper model")["messages"]]}  # fmt: skip
    status, data = post(fake_llm.openai_url + "/chat/completions", body)
    assert status == 200 and data["choices"][0]["message"]["content"] == "code for Deeper model"
    assert data["object"] == "chat.completion" and data["usage"]["total_tokens"] > 0
    assert fake_llm.requests[0].system == "sys" and fake_llm.requests[0].format == "openai"


def test_delays_and_errors_are_scripted(fake_llm: FakeLLM) -> None:
    fake_llm.delay = 0.3
    fake_llm.fail(529).push(Reply(text="late", delay=0.2))
    status, data = post(fake_llm.url + "/v1/messages", messages("ideas"))
    assert status == 529 and data["error"]["type"] == "overloaded_error"
    started = time.perf_counter()
    status, data = post(fake_llm.url + "/v1/messages", messages("ideas"))
    assert status == 200 and data["content"][0]["text"] == "late" and time.perf_counter() - started >= 0.5


@pytest.mark.parametrize("path, status", [("/v1/messages", 400), ("/v1/other", 404)])
def test_what_is_not_scripted_is_an_error(fake_llm: FakeLLM, path: str, status: int) -> None:
    assert post(fake_llm.url + path, messages("ideas"))[0] == status
