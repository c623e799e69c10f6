"""Headless Chromium, driven through its DevTools protocol over a pipe: no websocket, no extra package.

With `--remote-debugging-pipe` Chromium reads protocol commands from fd 3 and writes replies and
events to fd 4, as JSON messages each ended by a NUL byte. Listening to the protocol, rather than
scraping `--enable-logging` output, gives every console message, uncaught exception, log entry
(failed loads, blocked content) and network request as a structured event, so "no errors" and "no
request but the page itself" are exact checks.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio"]  # fmt: skip


def binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert found, "no Chromium: install it (Debian: apt-get install -y chromium); the report test needs a real browser"
    return found


class Browser:
    """One Chromium process with one page; `open` a file, then read what happened."""

    def __init__(self, profile: Path) -> None:
        to_chromium, self._write = os.pipe()
        self._read, from_chromium = os.pipe()
        # The child must find the pipes at fds 3 and 4: park them above 10 first, so moving one into
        # place never closes the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chromium, from_chromium)]
        for fd in (to_chromium, from_chromium):
            os.close(fd)

        def place() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        profile.mkdir(parents=True, exist_ok=True)
        with open(profile / "chromium.log", "ab") as log:  # its own chatter (D-Bus, GPU), for a failing test to read
            self.process = subprocess.Popen([binary(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
                                            pass_fds=(3, 4, *high), preexec_fn=place, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)  # fmt: skip
        for fd in high:
            os.close(fd)
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._receive, daemon=True)
        self._reader.start()
        self.session = ""

    def _receive(self) -> None:
        buffer = b""
        while chunk := os.read(self._read, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True, timeout: float = 30) -> Any:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        with self._changed:
            assert self._changed.wait_for(lambda: ident in self._replies, timeout), f"{method}: no reply in {timeout} s"
            reply = self._replies.pop(ident)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply.get("result", {})

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        with self._changed:
            assert self._changed.wait_for(lambda: any(e["method"] == method for e in self.events), timeout), \
                f"no {method} within {timeout} s"  # fmt: skip
            return next(e for e in self.events if e["method"] == method)

    def open(self, page: Path, width: int = 1280) -> None:
        """Load `page` in a fresh tab with console, log, page and network events on; wait until loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": page.resolve().as_uri()})
        self.wait_for("Page.loadEventFired")
        time.sleep(0.5)  # messages logged just after the load event

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads, blocked content)."""
        found = []
        for event in list(self.events):
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')} {params['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in list(self.events) if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, width: int = 1280) -> None:
        """The whole page, not just the first screenful."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        self._reader.join(5)
        os.close(self._read)
