"""Headless Chromium (Debian's package) for the tests: a page's DOM after its scripts ran, a screenshot, or a page
driven over the DevTools protocol (`open_page`: no driver binary, nothing downloaded, 127.0.0.1 only)."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run Chromium once with a fresh profile (bounded)."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is part of the test set-up (make test-setup / .ci/run)"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran (up to 5 s of virtual time)."""
    return chromium("--virtual-time-budget=5000", "--dump-dom", url).stdout


class Page:
    """One tab of a headless Chromium, driven with JavaScript over the DevTools protocol."""

    def __init__(self, socket: websocket.WebSocket):
        self.socket = socket
        self.calls = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events arriving meanwhile are dropped)."""
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message["error"]
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The expression's first truthy value, polled every 0.1 s for at most `timeout` seconds (an error, as
        while a page loads, counts as not yet)."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except AssertionError as exc:
                value = exc
            if value and not isinstance(value, AssertionError):
                return value
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout:g} s: {expression} (last: {value!r})")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def fill(self, selector: str, value: str) -> None:
        """Type into an input or pick a select's option as a user would: React's handlers see the change."""
        self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            const proto = el instanceof HTMLSelectElement ? HTMLSelectElement.prototype : HTMLInputElement.prototype;
            Object.getOwnPropertyDescriptor(proto, "value").set.call(el, {json.dumps(value)});
            el.dispatchEvent(new Event("input", {{bubbles: true}}));
            el.dispatchEvent(new Event("change", {{bubbles: true}}));
        }})()""")

    def click(self, selector: str, text: str | None = None) -> None:
        """Click the (first) element matching `selector`, with this text if given; it must exist."""
        found = self.evaluate(f"""(() => {{
            const el = [...document.querySelectorAll({json.dumps(selector)})]
                .find((e) => {json.dumps(text)} === null || e.textContent.trim() === {json.dumps(text)});
            if (el) el.click();
            return !!el;
        }})()""")
        assert found, f"nothing to click: {selector} {text or ''}"


@contextmanager
def open_page(url: str) -> Iterator[Page]:
    """A headless Chromium with a fresh profile showing `url` (once it loaded), driven over the DevTools protocol;
    closed after."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is part of the test set-up (make test-setup / .ci/run)"
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    browser = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                "--window-size=1400,1000", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):  # bounded: Chromium writes its port once listening
            if port_file.exists() and len(port_file.read_text().splitlines()) == 2:
                break
            time.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            target = next(t for t in json.loads(response.read()) if t["type"] == "page")
        socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        try:
            page = Page(socket)
            page.open(url)
            yield page
        finally:
            socket.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
