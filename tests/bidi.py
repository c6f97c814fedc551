"""Debian's Firefox (firefox-esr), headless, driven over WebDriver BiDi (https://w3c.github.io/webdriver-bidi/)
with aiohttp's WebSocket client: Playwright drives only its own patched Firefox build, which the test
machines cannot download, while a stock Firefox speaks BiDi itself.

The profile turns off Firefox's own network services (updates, telemetry, safe browsing, remote settings,
captive-portal and connectivity checks), so that a test's only traffic is to the loopback page it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FIREFOX = "/usr/bin/firefox-esr"  # Debian's package (scripts/test-tools.sh installs it)
LISTENING = re.compile(rb"WebDriver BiDi listening on (ws://\S+)")
QUIET_PREFS = {
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "data:,",
    "services.settings.server": "data:,",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "media.gmp-manager.url": "data:,",
    "geo.provider.network.url": "data:,",
}


class Firefox:
    """One BiDi session on one headless Firefox; ``entries`` collects what pages log (console and errors)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.entries: list[dict[str, Any]] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.context = ""

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            elif data.get("type") == "event" and data.get("method") == "log.entryAdded":
                self.entries.append(data["params"])

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = waiter
        await self.ws.send_str(json.dumps({"id": self._next, "method": method, "params": params}))
        answer = await asyncio.wait_for(waiter, 60)
        if answer.get("type") == "error":
            raise AssertionError(f"{method}: {answer.get('error')}: {answer.get('message')}")
        result: dict[str, Any] = answer["result"]
        return result

    async def start(self) -> None:
        await self.call("session.new", capabilities={})
        await self.call("session.subscribe", events=["log.entryAdded"])
        tree = await self.call("browsingContext.getTree")
        self.context = tree["contexts"][0]["context"]

    async def goto(self, url: str) -> None:
        await self.call("browsingContext.navigate", context=self.context, url=url, wait="complete")

    async def evaluate(self, expression: str) -> Any:
        """The expression's value, for strings, numbers and booleans (BiDi's serialisation)."""
        result = await self.call(
            "script.evaluate",
            expression=expression,
            target={"context": self.context},
            awaitPromise=True,
        )
        if result.get("type") == "exception":
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        import base64

        shot = await self.call("browsingContext.captureScreenshot", context=self.context)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("session.end"), 5)
        self._reader.cancel()
        await self.ws.close()


@contextlib.asynccontextmanager
async def firefox(timeout: float = 60.0) -> AsyncIterator[Firefox]:
    with tempfile.TemporaryDirectory(prefix="lbd-firefox-") as profile:
        prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in QUIET_PREFS.items())
        (Path(profile) / "user.js").write_text(prefs)
        process = await asyncio.create_subprocess_exec(
            FIREFOX,
            "--headless",
            "--no-remote",
            "--profile",
            profile,
            "--remote-debugging-port",
            "0",  # Firefox picks a free port and says which on stderr
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            url = await asyncio.wait_for(_listening(process.stderr), timeout)
            drain = asyncio.get_running_loop().create_task(process.stderr.read())  # keep the pipe moving
            async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/session") as ws:
                browser = Firefox(ws)
                try:
                    await browser.start()
                    yield browser
                finally:
                    await browser.close()
            drain.cancel()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _listening(stderr: asyncio.StreamReader) -> str:
    while line := await stderr.readline():
        found = LISTENING.search(line)
        if found:
            return found.group(1).decode()
    raise AssertionError("Firefox exited before its WebDriver BiDi server listened")
