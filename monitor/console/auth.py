"""Who may use the console: a bearer token or a login, sessions, and CSRF protection.

* Reading (pages, API): open on loopback when no credentials are configured; with credentials
  configured (required off loopback, see :class:`~monitor.config.ConsoleConfig`) it needs a
  session or the bearer token.
* Actions (POST): always need a session or the token; without configured credentials they are
  refused, whoever asks. A session's POST must carry its CSRF token (``X-CSRF-Token`` header
  or ``csrf`` form field), and any POST that names an ``Origin`` must name this server.
* Secrets are compared in constant time (:func:`hmac.compare_digest`) and never written into
  an answer: errors say what is missing, not what was expected.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from monitor.config import ConsoleConfig

SESSION_COOKIE = "monitor_console"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser."""

    user: str
    csrf: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: ``user`` is ``None`` for an anonymous (loopback, read-only) one."""

    user: str | None
    session: Session | None = None
    bearer: bool = False


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class ConsoleAuth:
    """Checks requests against ``[console]``'s token or login (see the module docstring)."""

    def __init__(self, config: ConsoleConfig) -> None:
        self._token = config.token.get_secret_value() if config.token is not None else None
        self._username = config.username
        self._password = config.password.get_secret_value() \
            if config.password is not None else None
        self._sessions: dict[str, Session] = {}

    @property
    def configured(self) -> bool:
        """Whether any credential is configured (else actions are refused)."""
        return self._token is not None or self._password is not None

    @property
    def login_fields(self) -> tuple[str, ...]:
        """What the login form asks for: ``("token",)``, ``("username", "password")`` or both."""
        fields: tuple[str, ...] = ()
        if self._password is not None:
            fields += ("username", "password")
        if self._token is not None:
            fields += ("token",)
        return fields

    def check_login(self, *, token: str = "", username: str = "", password: str = "") -> str | None:
        """The user name for valid credentials, else ``None``."""
        if self._token is not None and token and _equal(token, self._token):
            return "token"
        if self._password is not None and self._username is not None and password:
            # Both compared, whatever the first says: no timing hint about which was wrong.
            user_ok = _equal(username, self._username)
            password_ok = _equal(password, self._password)
            if user_ok and password_ok:
                return self._username
        return None

    def open_session(self, user: str, now: float | None = None) -> tuple[str, Session]:
        """A new session for ``user``: its cookie value and the session."""
        now = time.time() if now is None else now
        if len(self._sessions) >= MAX_SESSIONS:
            self._forget_expired(now)
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        session_id = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(32),
                          expires_at=now + SESSION_TTL_S)
        self._sessions[session_id] = session
        return session_id, session

    def close_session(self, request: web.Request) -> None:
        """Forget the request's session (logout)."""
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def caller(self, request: web.Request, now: float | None = None) -> Caller:
        """Who the request comes from (anonymous when it carries no valid credential)."""
        now = time.time() if now is None else now
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer ") and self._token is not None \
                and _equal(header[7:].strip(), self._token):
            return Caller(user="token", bearer=True)
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at > now:
                return Caller(user=session.user, session=session)
        return Caller(user=None)

    def require_read(self, request: web.Request) -> Caller:
        """The caller, when it may read; else 401."""
        caller = self.caller(request)
        if self.configured and caller.user is None:
            raise web.HTTPUnauthorized(text="log in first (/login) or send "
                                       "'Authorization: Bearer <console.token>'\n")
        return caller

    def require_action(self, request: web.Request, form_csrf: str | None = None) -> Caller:
        """The caller, when it may act (authenticated, same origin, CSRF token); else 401/403."""
        if not self.configured:
            raise web.HTTPForbidden(text="actions need console.token or console.username and "
                                    "console.password in the configuration\n")
        check_origin(request)
        caller = self.caller(request)
        if caller.user is None:
            raise web.HTTPUnauthorized(text="log in first (/login) or send "
                                       "'Authorization: Bearer <console.token>'\n")
        if caller.session is not None:
            given = request.headers.get("X-CSRF-Token") or form_csrf or ""
            if not given or not _equal(given, caller.session.csrf):
                raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page\n")
        return caller

    def _forget_expired(self, now: float) -> None:
        for session_id in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[session_id]


def check_origin(request: web.Request) -> None:
    """Refuse (403) a request whose ``Origin`` (or, lacking it, ``Referer``) is another site."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return  # not a browser's cross-site form (those always send Origin on POST)
    parts = urlsplit(origin)
    if origin == "null" or parts.netloc.lower() != request.host.lower():
        raise web.HTTPForbidden(text="cross-site request refused\n")
