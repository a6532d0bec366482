"""`ipsec-console serve` in a real headless browser (Debian's chromium), driven
over the Chrome DevTools Protocol (aiohttp's websocket client, no driver):
the token is required, the page opens the console, a click and a key switch
screens, and the dashboard is read back.

The page draws the terminal on a canvas, so the test reads the screen by
tapping the page's websocket (every byte the browser's terminal receives) and
replaying it into a pyte terminal of the same size. Chromium resolves no
name but 127.0.0.1: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.ops.labcopy import lab_copy

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium: apt-get install -y chromium")

# Records what the page's websocket receives (terminal output) and sends (size, keys).
TAP = """
(() => {
  const Native = window.WebSocket;
  window.__tap = {chunks: [], sent: []};
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener("message", (e) => {
      if (e.data instanceof ArrayBuffer) {
        let s = ""; const b = new Uint8Array(e.data);
        for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
        window.__tap.chunks.push(btoa(s));
      }
    });
    const send = ws.send.bind(ws);
    ws.send = (data) => { if (typeof data === "string") window.__tap.sent.push(data); send(data); };
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


def _wait_listening(port: int, log: Path, seconds: float = 20) -> None:
    """Until the server accepts on 127.0.0.1:port; failing with its log."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One browser tab over CDP (flat session)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session: str | None = None
        self._id = 0

    async def call(self, method: str, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        await self.ws.send_json(msg)
        while True:
            reply = await self.ws.receive_json(timeout=30)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def js(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")


class Screen:
    """The terminal as the page received it, replayed into pyte."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.term = None
        self.stream = None

    async def update(self) -> list[str]:
        import pyte

        if self.term is None:
            sizes = [json.loads(m) for m in await self.page.js("window.__tap ? window.__tap.sent : []")]
            sizes = [m[1] for m in sizes if m and m[0] == "resize"]
            if not sizes:
                return []
            self.term = pyte.Screen(sizes[-1]["width"], sizes[-1]["height"])
            self.stream = pyte.ByteStream(self.term)
        chunks = await self.page.js("window.__tap.chunks.splice(0)")
        for c in chunks:
            self.stream.feed(base64.b64decode(c))
        return self.term.display

    async def wait_for(self, predicate, timeout: float = 20, what: str = "") -> list[str]:
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = await self.update()
            if lines and predicate("\n".join(lines)):
                return lines
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(lines))


async def _key(page: Page, char: str) -> None:
    await page.call("Input.dispatchKeyEvent", type="keyDown", key=char, text=char)
    await page.call("Input.dispatchKeyEvent", type="keyUp", key=char)


async def _click_cell(page: Page, screen: Screen, col: int, row: int) -> None:
    box = await page.js("(() => { const r = document.querySelector('.xterm-screen').getBoundingClientRect();"
                        " return [r.left, r.top, r.width, r.height]; })()")
    left, top, width, height = box
    x = left + (col + 0.5) * width / screen.term.columns
    y = top + (row + 0.5) * height / screen.term.lines
    for kind in ("mousePressed", "mouseReleased"):
        await page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


@pytest.fixture
def served(tmp_path):
    port = _free_port()
    token = "t0k3n-" + os.urandom(6).hex()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    log = open(tmp_path / "serve.log", "wb")
    # The browser's console runs a copy of the lab on this process's addresses and ports: the shipped lab's
    # 127.0.0.1 port 15500 is anyone's (another test run), and the engine refuses a busy address and port.
    lab = lab_copy(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "console", "serve", str(lab), "--port", str(port), "--token",
                             token],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, tmp_path / "serve.log")
        yield f"http://127.0.0.1:{port}", token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the console it started for the browser
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def browser(tmp_path):
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1000,700", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
async def test_the_web_view_needs_its_token_switches_screens_and_shows_the_dashboard(served, browser):
    url, token = served
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/") as r:
            assert r.status == 403  # no token, nothing
        async with http.get(url + "/?token=wrong") as r:
            assert r.status == 403
        async with http.ws_connect(browser, max_msg_size=0) as ws:
            page = Page(ws)
            target = await page.call("Target.createTarget", url="about:blank")
            attached = await page.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            page.session = attached["sessionId"]
            await page.call("Page.enable")
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=TAP)
            await page.call("Page.navigate", url=f"{url}/?token={token}")
            screen = Screen(page)
            # Everything the dashboard must show, waited for together: a frame arrives in several
            # websocket messages, so a check on the first part of it can see a half-drawn screen.
            shown = ("Connections", "ESTABLISHED", "LAB", "branch", "CHILD SAs")
            await screen.wait_for(lambda t: all(s in t for s in shown), timeout=40, what="the dashboard")
            # a click on "2Nego" in the top bar
            row0 = screen.term.display[0]
            await _click_cell(page, screen, row0.index("2Nego") + 1, 0)
            await screen.wait_for(lambda t: "Exchanges" in t or "IKE_SA_INIT" in t, what="negotiations")
            await _key(page, "4")  # and a key
            await screen.wait_for(lambda t: "Engine log" in t, what="the logs")
            await _key(page, "1")
            text = "\n".join(await screen.wait_for(lambda t: "Connections" in t, what="back to the dashboard"))
            assert "branch" in text and "up" in text


async def test_the_access_log_never_writes_the_token(served, tmp_path):
    """aiohttp logs each request line; a URL's token (right or a guess) is written as <token>."""
    url, token = served
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/?token={token}") as r:
            assert r.status == 200
        async with http.get(f"{url}/?x=1&token=guess-{token[::-1]}") as r:
            assert r.status == 403
    text = (tmp_path / "serve.log").read_text()
    assert "<token>" in text  # the request lines were logged
    collapsed = "".join(text.split())  # Rich wraps log lines at 80 columns
    # Only the URL printed at start carries it.
    assert collapsed.count(token) == 1, text
    assert token[::-1] not in collapsed, text


def test_a_busy_port_is_one_line_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config")}
        done = subprocess.run([sys.executable, "-m", "console", "serve", "--port", str(port), "--token", "tok"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert f"cannot listen on 127.0.0.1 port {port}" in done.stderr
    assert "address already in use" in done.stderr
    assert "?token=" not in done.stdout  # no URL announced for a server that never listened


def test_an_ipv6_host_is_a_url_with_brackets():
    from console.serve import TokenServer

    assert TokenServer("true", host="::1", port=8022, token="t").url == "http://[::1]:8022/?token=t"
    assert TokenServer("true", host="127.0.0.1", port=8022, token="t").url == "http://127.0.0.1:8022/?token=t"


async def test_the_page_points_at_the_host_the_browser_used(served):
    """With --host 0.0.0.0 a browser comes by the gateway's name or address, or through a TLS proxy:
    the page's script and websocket must go there, not to the listening address."""
    url, token = served
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/?token={token}", headers={"Host": "gw.example.org:8022"}) as r:
            page = await r.text()
        async with http.get(f"{url}/?token={token}",
                            headers={"Host": "gw.example.org", "X-Forwarded-Proto": "https"}) as r:
            proxied = await r.text()
    assert 'data-session-websocket-url="ws://gw.example.org:8022/ws"' in page
    assert "127.0.0.1" not in page
    assert 'src="/static/js/textual.js"' in page
    assert 'data-session-websocket-url="wss://gw.example.org/ws"' in proxied


async def test_sigterm_ends_the_open_browser_sessions_and_exits_0(tmp_path):
    """A stop (systemctl stop, Ctrl+C) with a browser open ends its session at once: aiohttp alone
    waited for the websocket (up to 60 s) with the console still running."""
    port = _free_port()
    token = "t0k3n-" + os.urandom(6).hex()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "console", "serve", str(lab_copy(tmp_path)), "--port", str(port),
                             "--token", token], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_listening(port, tmp_path / "serve.log")
        async with aiohttp.ClientSession(cookies={"ipsec_console_token": token}) as http:
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await ws.send_str(json.dumps(["resize", {"width": 80, "height": 24}]))
                first = await ws.receive(timeout=30)  # the console is drawing
                assert first.type == aiohttp.WSMsgType.BINARY
                os.kill(proc.pid, signal.SIGTERM)
                returncode = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        assert returncode == 0
        assert "closing 1 browser session(s)" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_a_second_browser_session_on_the_lab_is_told_why_it_cannot_run(served):
    """Each session runs its own engine; a second one on the same policy cannot take the IKE ports.
    Its page ended blank (the engine's error went to the server's stderr): it now says why."""
    url, token = served
    async with aiohttp.ClientSession(cookies={"ipsec_console_token": token}) as http:
        async with http.ws_connect(f"{url}/ws") as first:
            await first.send_str(json.dumps(["resize", {"width": 80, "height": 24}]))
            assert (await first.receive(timeout=30)).type == aiohttp.WSMsgType.BINARY  # running
            async with http.ws_connect(f"{url}/ws") as second:
                await second.send_str(json.dumps(["resize", {"width": 80, "height": 24}]))
                shown = b""
                async for msg in second:  # until the server closes it
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        shown += msg.data
    text = " ".join(shown.decode(errors="replace").split())
    assert "another browser session is open" in text
    assert "ipsec-console serve --attach" in text


async def test_attach_to_no_daemon_tells_the_browser_why(tmp_path):
    """`serve --attach` with no daemon: each session's console exited at once, its reason on the
    server's stderr, and the page showed an ended session; the page now says there is no daemon."""
    port = _free_port()
    sock = tmp_path / "none.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "console", "serve", "--attach", "--control", str(sock),
                             "--port", str(port), "--token", "tok"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, tmp_path / "serve.log")
        shown = b""
        async with aiohttp.ClientSession(cookies={"ipsec_console_token": "tok"}) as http:
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await ws.send_str(json.dumps(["resize", {"width": 80, "height": 24}]))
                # Until the server closes it. Without a word to the browser, textual-serve also
                # left this websocket open with nothing behind it: the guard makes that a failure.
                while (msg := await ws.receive(timeout=60)).type == aiohttp.WSMsgType.BINARY:
                    shown += msg.data
        assert f"no daemon at {sock}" in " ".join(shown.decode(errors="replace").split())
        assert f"no daemon at {sock}" in (tmp_path / "serve.log").read_text()  # said at start too
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False),
                                          ("localhost", False), ("0.0.0.0", True), ("192.0.2.1", True)])
def test_only_a_host_others_can_reach_gets_the_warning(host, warned):
    """127.0.0.2 is loopback too: only this machine reaches it, no 'anyone who can reach it' warning."""
    from console.serve import _loopback

    assert _loopback(host) is not warned
