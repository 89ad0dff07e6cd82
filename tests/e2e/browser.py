"""Headless Chromium over the DevTools protocol, for the trading page's end-to-end tests.

`Browser.launch` starts Debian's chromium with one DevTools websocket (driven with
`websockets`); each `Page` is a flat session on it that navigates, evaluates, clicks and
types like a user, waits for a condition with `eventually`, takes screenshots, and records
every console message, uncaught exception and websocket frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.helpers import eventually

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-port=0",
)
BROWSER_START_TIMEOUT_S = 30.0
CDP_TIMEOUT_S = 30.0
WAIT_TIMEOUT_S = 20.0
SHIFT = 8  # Input.dispatchMouseEvent's modifier bit


def chromium_path() -> str | None:
    configured = os.environ.get("GPUX_CHROMIUM", "").strip()
    if configured:
        return configured
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable(reason: str) -> None:
    """Skip the test for a missing tool, or fail it under CI=true."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class Browser:
    """Chromium with one DevTools websocket; pages are flat sessions on it."""

    def __init__(self, process: asyncio.subprocess.Process, ws: Any, stderr: deque[str],
                 artifacts: Path) -> None:
        self.process = process
        self.artifacts = artifacts
        self.ws = ws
        self.stderr = stderr
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, executable: str, profile: Path,
                     artifacts: Path) -> AsyncIterator[Browser]:
        """Start Chromium; its pages save screenshots and consoles in `artifacts`."""
        process = await asyncio.create_subprocess_exec(
            executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr: deque[str] = deque(maxlen=200)
        browser: Browser | None = None
        drain: asyncio.Task[None] | None = None
        try:
            url = await asyncio.wait_for(_devtools_url(process, stderr), BROWSER_START_TIMEOUT_S)
            drain = asyncio.create_task(_drain(process, stderr))
            ws = await websockets.connect(url, max_size=256 * 1024 * 1024, ping_interval=None)
            browser = cls(process, ws, stderr, artifacts)
            yield browser
        finally:
            if browser is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(browser.send("Browser.close"), 5)
                browser.reader.cancel()
                await browser.ws.close()
            with contextlib.suppress(ProcessLookupError):
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if drain is not None:
                drain.cancel()

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session_id: str | None = None) -> dict[str, Any]:
        message_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, CDP_TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if "id" in message:
                future = self.pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif (page := self.pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message["method"], message.get("params", {}))

    async def new_page(self, width: int, height: int) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        self.pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.send(f"{domain}.enable")
        await page.resize(width, height)
        return page


async def _devtools_url(process: asyncio.subprocess.Process, lines: deque[str]) -> str:
    assert process.stderr is not None
    while True:
        raw = await process.stderr.readline()
        if not raw:
            raise RuntimeError("chromium exited before DevTools listened:\n" + "\n".join(lines))
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if "DevTools listening on " in line:
            return line.split("DevTools listening on ", 1)[1].strip()


async def _drain(process: asyncio.subprocess.Process, lines: deque[str]) -> None:
    assert process.stderr is not None
    while raw := await process.stderr.readline():
        lines.append(raw.decode(errors="replace").rstrip())


class Page:
    """One tab: navigate, evaluate, click and type like a user, screenshot; it records
    every console message and uncaught exception."""

    def __init__(self, browser: Browser, session_id: str, target_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.console: list[str] = []
        self.errors: list[str] = []
        self.frames: list[tuple[str, str]] = []  # ("send" | "recv", websocket text frame)
        self.loaded = asyncio.Event()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", "")))
                            for arg in params.get("args", []))
            self.console.append(f"console.{params['type']}: {text}")
            if params["type"] in ("error", "assert"):
                self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description", details.get("text"))
            self.console.append(f"exception: {description}")
            self.errors.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"log.{entry['level']}: {entry['text']} {entry.get('url', '')}")
            if entry["level"] == "error":
                self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
        elif method in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            direction = "send" if method.endswith("Sent") else "recv"
            self.frames.append((direction, params["response"]["payloadData"]))
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id)

    async def resize(self, width: int, height: int) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    async def goto(self, url: str) -> None:
        self.loaded.clear()
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(self.loaded.wait(), CDP_TIMEOUT_S)

    async def front(self) -> None:
        await self.send("Page.bringToFront")

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
        self.browser.pages.pop(self.session_id, None)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, message: str,
                       timeout_s: float = WAIT_TIMEOUT_S) -> None:
        async def holds() -> bool:
            return bool(await self.evaluate(expression))

        try:
            await eventually(holds, timeout_s=timeout_s, interval_s=0.05, message=message)
        except AssertionError:
            await self.screenshot(f"failed-{message[:40].replace(' ', '-')}")
            raise

    async def text(self, selector: str) -> str:
        return str(await self.evaluate(
            f"document.querySelector({json.dumps(selector)})?.textContent?.trim() ?? ''"))

    async def click(self, selector: str, *, shift: bool = False) -> None:
        """Click the middle of the element, as a mouse does (holding shift if asked)."""
        box = await self.evaluate(f"""(() => {{
            const element = document.querySelector({json.dumps(selector)});
            if (!element) return null;
            element.scrollIntoView({{block: "center", inline: "center"}});
            const r = element.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width}};
        }})()""")
        assert box and box["w"] > 0, f"nothing to click at {selector}"
        for kind, buttons in (("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)):
            await self.send("Input.dispatchMouseEvent", {
                "type": kind, "x": box["x"], "y": box["y"], "button": "left",
                "buttons": buttons, "clickCount": 1, "modifiers": SHIFT if shift else 0})

    async def fill(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        await self.send("Input.insertText", {"text": text})

    async def choose(self, selector: str, value: str) -> None:
        await self.evaluate(f"""(() => {{
            const select = document.querySelector({json.dumps(selector)});
            select.value = {json.dumps(value)};
            select.dispatchEvent(new Event("change", {{bubbles: true}}));
        }})()""")

    async def screenshot(self, name: str) -> Path:
        """Save the page, from the top, as NAME.png in the artifacts dir: the viewport, or the
        whole page when it is taller (a phone layout)."""
        artifacts = self.browser.artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        await self.evaluate("window.scrollTo(0, 0)")
        metrics = await self.send("Page.getLayoutMetrics")
        content, viewport = metrics["cssContentSize"], metrics["cssLayoutViewport"]
        params: dict[str, Any] = {"format": "png"}
        if content["height"] > viewport["clientHeight"] + 1:
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": viewport["clientWidth"], "height": content["height"],
                "scale": 1})
        shot = await self.send("Page.captureScreenshot", params)
        path = artifacts / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def save_console(self, name: str) -> None:
        self.browser.artifacts.mkdir(parents=True, exist_ok=True)
        (self.browser.artifacts / f"{name}-console.txt").write_text(
            "\n".join(self.console) + "\n")


# -- the trading page's elements ------------------------------------------------------------


def level_size(side: str, price_text: str) -> str:
    return (f"(document.querySelector('#ladder-{side} .level[data-price=\"{price_text}\"] .size')"
            f"?.textContent ?? '')")


def sent_ops(page: Page, op: str) -> int:
    """How many requests of `op` the page has sent."""
    return sum(1 for direction, text in page.frames
               if direction == "send" and json.loads(text).get("op") == op)


def toast_with(text: str) -> str:
    return (f"[...document.querySelectorAll('.toast')].some("
            f"t => t.textContent.includes({json.dumps(text)}))")
