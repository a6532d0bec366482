"""``ipsec-console serve``: the same console in a web browser (textual-serve).

Each browser session runs one console process: ``--attach`` (the way to
share a daemon's tunnels between the terminal and the browser) or the
console on CONFIG / the lab. The server listens on 127.0.0.1 by default and
answers nothing without a token: a random one is printed in the URL at start
(or given with ``--token``). The first request with ``?token=`` sets a
same-site, HTTP-only cookie that the page's websocket then carries.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import secrets
import shlex
import signal
import sys

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.server import Server, to_int

from engine.runtime.client import DEFAULT_CONTROL

COOKIE = "ipsec_console_token"

SECOND_SESSION = ("\r\n  ipsec-console: another browser session is open. Each session runs its own engine, and\r\n"
                  "  the first one holds the IKE addresses and ports: close it, or share one daemon between\r\n"
                  "  sessions with `ipsec-console daemon CONFIG` and `ipsec-console serve --attach`.\r\n")

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


class _RedactToken(logging.Filter):
    """aiohttp's access log writes each request line: never the token (right or wrong) it carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_IN_URL.sub(r"\1<token>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def console_command(config: str | None, attach: bool, control: str | None) -> str:
    """The shell command textual-serve starts per browser session (this interpreter, this package)."""
    args = [sys.executable, "-m", "console"]
    if attach:
        args.append("attach")
        if control:
            args += ["--control", control]
    elif config:
        args.append(config)
    return shlex.join(args)


class TokenServer(Server):
    """textual-serve's server, refusing every request that lacks the token."""

    def __init__(self, command: str, *, host: str, port: int, token: str, one_session: bool = False,
                 attach_control: str | None = None) -> None:
        # An IPv6 literal goes in brackets in a URL ("http://::1:8022" is no URL).
        url_host = f"[{host}]" if ":" in host else host
        super().__init__(command, host=host, port=port, title="ipsec-console",
                         public_url=f"http://{url_host}:{port}")
        self.token = token
        self._sessions: set[asyncio.Task] = set()
        self.one_session = one_session
        """The console runs its own engine (CONFIG or the lab): a second one could not take the IKE ports."""
        self.attach_control = attach_control
        """--attach: the daemon's control socket, looked at before each session."""

    @property
    def url(self) -> str:
        return f"{self.public_url}/?token={self.token}"

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._check_token)
        # The stock page loads a web font from a third party: a gateway's console asks no one else.
        aiohttp_jinja2.setup(app, loader=jinja2.FunctionLoader(self._template))
        return app

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict:
        """The page, its static files and websocket on the host and port the browser used.

        textual-serve writes them from the listening address: ``--host 0.0.0.0`` or ``::`` gave a
        page whose script and websocket pointed at 0.0.0.0 (the browser's own machine), and behind
        a TLS reverse proxy at plain http on 127.0.0.1."""
        https = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        ws = request.app.router["websocket"].url_for()
        return {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"{'wss' if https else 'ws'}://{request.host}{ws}",
            "config": {"static": {"url": "/static/"}},
            "application": {"name": self.title},
        }

    def _template(self, name: str) -> str | None:
        path = self.templates_path / name
        if not path.is_file():
            return None
        return "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                       if "fonts.googleapis.com" not in line)

    @web.middleware
    async def _check_token(self, request: web.Request, handler):
        given = request.query.get("token") or request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPForbidden(text="ipsec-console serve: open the URL with its token "
                                         "(printed when the server started)\n")
        response = await handler(request)
        if "token" in request.query and isinstance(response, web.Response):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    def initialize_logging(self) -> None:
        super().initialize_logging()
        logging.getLogger("aiohttp.access").addFilter(_RedactToken())

    def serve(self, debug: bool = False) -> None:
        """textual-serve's serve, announcing the URL only once the port is bound."""
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.add_signal_handler(signal.SIGINT, self.request_exit)
        loop.add_signal_handler(signal.SIGTERM, self.request_exit)
        web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False, loop=loop,
                    print=lambda *args: self._announce())

    async def on_startup(self, app: web.Application) -> None:
        """Nothing: textual-serve printed its logo and URL here, before the port was known to be
        bound; _announce says it once it is (see serve)."""

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        if self.one_session and self._sessions:
            # Its engine would fail on the ports the first session's engine holds, and the browser
            # would show an ended session with no reason (the error went to the server's stderr).
            return await self._refuse(request, SECOND_SESSION)
        if self.attach_control is not None:
            problem = await asyncio.get_running_loop().run_in_executor(None, _control_problem,
                                                                       self.attach_control)
            if problem:
                # `console attach` would exit at once, its reason on the server's stderr: the
                # browser would show an ended session and no reason.
                return await self._refuse(request, f"\r\n  ipsec-console: {problem}\r\n")
        task = asyncio.current_task()
        self._sessions.add(task)
        try:
            return await super().handle_websocket(request)
        finally:
            self._sessions.discard(task)

    @staticmethod
    async def _refuse(request: web.Request, text: str) -> web.WebSocketResponse:
        """A session that cannot run: its page shows ``text`` and ends."""
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        await websocket.send_bytes(text.encode())
        await websocket.close()
        return websocket

    async def on_shutdown(self, app: web.Application) -> None:
        """Ctrl+C / SIGTERM ends the browser sessions now (each quits its console): aiohttp would
        otherwise wait up to 60 s for their websockets before stopping."""
        if self._sessions:
            print(f"ipsec-console: closing {len(self._sessions)} browser session(s)", flush=True)
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    def _announce(self) -> None:
        print(f"ipsec-console: serving {self.command} on {self.url}", flush=True)
        if not _loopback(self.host):
            print(f"ipsec-console: listening on {self.host}: anyone who can reach it and has the token "
                  "controls the console (put TLS in front, e.g. a reverse proxy)", flush=True)
        print("ipsec-console: Ctrl+C stops the server", flush=True)


def _loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or localhost (127.0.0.2 too): only this machine reaches it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _control_problem(path: str) -> str:
    """Why the daemon's control socket at ``path`` does not answer, or "" when it does."""
    from engine.runtime.client import ControlError, check_reachable

    try:
        check_reachable(path)
    except ControlError as exc:
        return str(exc)
    return ""


def serve(config: str | None, *, attach: bool, control: str | None, host: str, port: int,
          token: str | None) -> int:
    token = token or secrets.token_urlsafe(24)
    server = TokenServer(console_command(config, attach, control), host=host, port=port, token=token,
                         one_session=not attach, attach_control=(control or DEFAULT_CONTROL) if attach else None)
    if attach and (problem := _control_problem(control or DEFAULT_CONTROL)):
        print(f"ipsec-console: {problem}; browser sessions are told so until the daemon runs", flush=True)
    if not attach:
        print("ipsec-console: each browser session runs its own console and engine; to share a "
              "daemon's tunnels, run `ipsec-console daemon CONFIG` and `ipsec-console serve --attach`",
              flush=True)
    try:
        server.serve()
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(f"ipsec-console: cannot listen on {host} port {port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
