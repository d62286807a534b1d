"""The console's HTTP side: JSON API under ``/api/``, server-rendered pages, live updates.

Added to the telemetry server's application (:meth:`ConsoleWeb.add_routes`), so it shares
its address with ``/healthz``, ``/readyz`` and ``/metrics``::

    GET  /                          cameras grid (one tile per camera: newest frame + boxes)
    GET  /cameras/{camera}          one camera: frame, boxes, recent verdicts, alerts, actions
    GET  /events                    alerts, filtered (?camera=&hazard=&since=&until=)
    GET  /login, POST /login, POST /logout
    GET  /api/cameras               cameras with their newest sample and raised alerts
    GET  /api/cameras/{camera}/verdicts
    GET  /api/events                ?camera=&hazard=&since=&until=&active= (ISO 8601 or epoch)
    GET  /api/events/{id}
    GET  /api/frames/{sample}.jpg   the JPEG as it was sent to the model (immutable)
    GET  /api/evidence/{id}/{name}  an alert's evidence file named by its events (clip.mp4
                                    once ready, crop<n>.jpg: the zoom-in crops), as stored
    GET  /api/stream                Server-Sent Events: sample, alert, health, cameras, lost
    POST /api/events/{id}/ack       acknowledge
    POST /api/events/{id}/false_alarm
    POST /api/cameras/{camera}/missed   {"hazard": "fire" | "smoke" | "no_helmet"}

Pages are Jinja2 templates with autoescape on: camera contexts and the model's words are
untrusted text and always reach the browser escaped. Boxes are drawn by the browser (SVG over
the JPEG), so serving a viewer never encodes an image. Every text answer passes through
:func:`monitor.redaction.redact`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib.resources import files
from typing import Any, Protocol

import jinja2
from aiohttp import web

from monitor.alerts.payloads import iso_time
from monitor.console.auth import SESSION_COOKIE, SESSION_TTL_S, Caller, ConsoleAuth
from monitor.console.overlays import OUTCOME_WORDS
from monitor.console.state import ConsoleAlert, ConsoleState
from monitor.model.answer import Hazard
from monitor.model.verify import CheckOutcome
from monitor.redaction import redact

logger = logging.getLogger(__name__)

SSE_HEARTBEAT_S = 15.0
_STATIC = ("console.css", "console.js")
_HAZARD_NAMES = {"fire": "Fire", "smoke": "Smoke", "no_helmet": "No hard hat"}
_PROBLEM_NAMES = {"offline": "offline", "frozen": "frozen picture", "blank": "blank picture",
                  "view_changed": "view changed", "no_verdict": "no verdict",
                  "model_unavailable": "model unavailable"}


class ActionError(Exception):
    """An action cannot be done (unknown alert, alert already ended, no frame yet...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConsoleActions(Protocol):
    """What the operator's buttons do (implemented by the service, which owns the trackers)."""

    async def acknowledge(self, event_id: str, by: str) -> ConsoleAlert:
        """Acknowledge a raised alert."""
    async def false_alarm(self, event_id: str, by: str) -> ConsoleAlert:
        """End an alert as a false alarm; its frame becomes a negative example."""
    async def missed(self, camera_id: str, hazard: Hazard, by: str) -> str:
        """Mark the camera's newest frame as showing ``hazard``; returns the file written."""


def parse_time(text: str | None, name: str) -> float | None:
    """A filter's time: ISO 8601 or epoch seconds (400 naming the parameter otherwise)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected ISO 8601 or epoch seconds, got "
                                 f"{text[:40]!r}\n") from None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=redact(json.dumps(data, ensure_ascii=False)), status=status,
                        content_type="application/json")


class ConsoleWeb:
    """The console's routes over a :class:`ConsoleState` (see the module docstring)."""

    def __init__(self, state: ConsoleState, auth: ConsoleAuth,
                 actions: ConsoleActions | None = None, *, title: str = "monitor") -> None:
        self._state = state
        self._auth = auth
        self._actions = actions
        self._title = title
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("monitor.console", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined)
        self._env.filters["iso"] = lambda t: iso_time(t) if t is not None else ""
        self._env.filters["hazard_name"] = lambda h: _HAZARD_NAMES.get(h, h)
        self._env.filters["problem_name"] = lambda p: _PROBLEM_NAMES.get(p, p)
        self._env.filters["outcome_text"] = lambda o: OUTCOME_WORDS.get(CheckOutcome(o), o)
        self._streams: set[asyncio.Task[Any]] = set()
        """The handlers of open live streams: ended at shutdown (a browser never lets go)."""

    def add_routes(self, app: web.Application) -> None:
        """Register the console's routes on ``app``."""
        get, post = app.router.add_get, app.router.add_post
        get("/", self._page_cameras)
        get("/cameras/{camera}", self._page_camera)
        get("/events", self._page_events)
        get("/login", self._page_login)
        post("/login", self._login)
        post("/logout", self._logout)
        get("/static/{name}", self._static)
        get("/api/cameras", self._api_cameras)
        get("/api/cameras/{camera}/verdicts", self._api_verdicts)
        get("/api/events", self._api_events)
        get("/api/events/{event_id}", self._api_event)
        get("/api/frames/{sample}.jpg", self._api_frame)
        get("/api/evidence/{event_id}/{name}", self._api_evidence)
        get("/api/stream", self._api_stream)
        post("/api/events/{event_id}/ack", self._action_ack)
        post("/api/events/{event_id}/false_alarm", self._action_false_alarm)
        post("/api/cameras/{camera}/missed", self._action_missed)
        app.on_shutdown.append(self._close_streams)

    # --- JSON. ---------------------------------------------------------------------------------

    def cameras_json(self) -> list[dict[str, Any]]:
        """``/api/cameras``."""
        state = self._state
        answer = []
        for view in state.cameras:
            latest = state.latest(view.camera_id)
            answer.append({
                "id": view.camera_id, "context": view.context, "hazards": list(view.hazards),
                "roi": [list(p) for p in view.roi] if view.roi else None,
                "zones": [{"name": z.name, "points": [list(p) for p in z.points]}
                          for z in view.zones],
                "health": state.health(view.camera_id),
                "stream": state.stream(view.camera_id),
                "latest": latest.to_json() if latest else None,
                "active_alerts": [a.to_json() for a in state.active_alerts(view.camera_id)],
            })
        return answer

    def _filtered_alerts(self, request: web.Request) -> list[ConsoleAlert]:
        query = request.query
        hazard = query.get("hazard") or None
        if hazard is not None and hazard not in _HAZARD_NAMES:
            raise web.HTTPBadRequest(text=f"hazard: expected one of {', '.join(_HAZARD_NAMES)}"
                                     f"\n")
        active_text = query.get("active")
        active = None if not active_text else active_text.lower() in ("1", "true", "yes")
        return self._state.alerts(camera=query.get("camera") or None, hazard=hazard,
                                  since=parse_time(query.get("since"), "since"),
                                  until=parse_time(query.get("until"), "until"), active=active)

    async def _api_cameras(self, request: web.Request) -> web.Response:
        self._auth.require_read(request)
        return _json({"cameras": self.cameras_json()})

    async def _api_verdicts(self, request: web.Request) -> web.Response:
        self._auth.require_read(request)
        camera = self._camera_or_404(request)
        return _json({"camera": camera,
                      "verdicts": [s.to_json() for s in self._state.samples(camera)]})

    async def _api_events(self, request: web.Request) -> web.Response:
        self._auth.require_read(request)
        return _json({"events": [a.to_json() for a in self._filtered_alerts(request)]})

    async def _api_event(self, request: web.Request) -> web.Response:
        self._auth.require_read(request)
        alert = self._state.alert(request.match_info["event_id"])
        if alert is None:
            raise web.HTTPNotFound(text="no such event (it may have been forgotten)\n")
        return _json(alert.to_json())

    async def _api_frame(self, request: web.Request) -> web.Response:
        self._auth.require_read(request)
        try:
            sample = self._state.sample(int(request.match_info["sample"]))
        except ValueError:
            sample = None
        if sample is None:
            raise web.HTTPNotFound(text="no such frame (only the newest are kept)\n")
        # The bytes of one sample never change: a viewer fetches each image once.
        return web.Response(body=sample.jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=3600, immutable"})

    async def _api_evidence(self, request: web.Request) -> web.StreamResponse:
        self._auth.require_read(request)
        # Only a path an event named is served (never one built from the request), and the
        # file as it was written: serving it costs a read, never an encode.
        name = request.match_info["name"]
        path = self._state.evidence_path(request.match_info["event_id"], name)
        if path is None:
            raise web.HTTPNotFound(text="no such evidence file (not named by the alert, or the "
                                   "clip is not ready)\n")
        # A file pruned since is answered 404 by FileResponse itself.
        return web.FileResponse(path, headers={
            "Content-Type": "video/mp4" if name.endswith(".mp4") else "image/jpeg",
            "Cache-Control": "private, max-age=3600"})

    async def _api_stream(self, request: web.Request) -> web.StreamResponse:
        self._auth.require_read(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = self._state.subscribe()
        handler = asyncio.current_task()
        if handler is not None:
            self._streams.add(handler)
        try:
            await response.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    update = await asyncio.wait_for(queue.get(), timeout=SSE_HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                kind = update["type"]
                data = redact(json.dumps(update, ensure_ascii=False))
                await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
                if kind == "lost":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._state.unsubscribe(queue)
            if handler is not None:
                self._streams.discard(handler)
        return response

    async def _close_streams(self, _app: web.Application) -> None:
        streams = list(self._streams)
        for task in streams:
            task.cancel("shutting down")
        if streams:
            await asyncio.wait(streams, timeout=2)

    # --- Actions. ------------------------------------------------------------------------------

    async def _action_args(self, request: web.Request) -> tuple[Caller, dict[str, Any]]:
        body: dict[str, Any] = {}
        if request.content_type == "application/json" and request.can_read_body:
            try:
                loaded = await request.json()
            except ValueError:
                raise web.HTTPBadRequest(text="the body is not valid JSON\n") from None
            if not isinstance(loaded, dict):
                raise web.HTTPBadRequest(text="the body must be a JSON object\n")
            body = loaded
        elif request.can_read_body:
            body = dict(await request.post())
        csrf = body.get("csrf")
        caller = self._auth.require_action(request, csrf if isinstance(csrf, str) else None)
        if self._actions is None:
            raise web.HTTPServiceUnavailable(text="actions are not available in this process\n")
        return caller, body

    async def _run_action(self, action: Callable[[], Awaitable[Any]]) -> web.Response:
        try:
            result = await action()
        except ActionError as exc:
            return _json({"error": str(exc)}, status=exc.status)
        if isinstance(result, ConsoleAlert):
            return _json(result.to_json())
        return _json({"saved": result})

    async def _action_ack(self, request: web.Request) -> web.Response:
        caller, _ = await self._action_args(request)
        assert self._actions is not None  # noqa: S101 - checked by _action_args
        actions, event_id = self._actions, request.match_info["event_id"]
        return await self._run_action(lambda: actions.acknowledge(event_id, caller.user or "-"))

    async def _action_false_alarm(self, request: web.Request) -> web.Response:
        caller, _ = await self._action_args(request)
        assert self._actions is not None  # noqa: S101 - checked by _action_args
        actions, event_id = self._actions, request.match_info["event_id"]
        return await self._run_action(lambda: actions.false_alarm(event_id, caller.user or "-"))

    async def _action_missed(self, request: web.Request) -> web.Response:
        caller, body = await self._action_args(request)
        assert self._actions is not None  # noqa: S101 - checked by _action_args
        camera = self._camera_or_404(request)
        try:
            hazard = Hazard(str(body.get("hazard", "")))
        except ValueError:
            raise web.HTTPBadRequest(text=f"hazard: expected one of "
                                     f"{', '.join(_HAZARD_NAMES)}\n") from None
        actions = self._actions
        return await self._run_action(lambda: actions.missed(camera, hazard, caller.user or "-"))

    # --- Pages. --------------------------------------------------------------------------------

    def _render(self, request: web.Request, template: str, caller: Caller,
                **context: Any) -> web.Response:
        html = self._env.get_template(template).render(
            title=self._title, user=caller.user, can_act=self._auth.configured
            and caller.user is not None,
            csrf=caller.session.csrf if caller.session is not None else "",
            hazard_names=_HAZARD_NAMES, path=request.path, **context)
        return web.Response(text=redact(html), content_type="text/html",
                            headers={"Content-Security-Policy":
                                     "default-src 'self'; img-src 'self'; "
                                     "style-src 'self'; script-src 'self'; "
                                     "frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "same-origin"})

    def _read_or_login(self, request: web.Request) -> Caller:
        try:
            return self._auth.require_read(request)
        except web.HTTPUnauthorized:
            raise web.HTTPSeeOther(location="/login") from None

    def _camera_or_404(self, request: web.Request) -> str:
        camera = request.match_info["camera"]
        if self._state.camera(camera) is None:
            raise web.HTTPNotFound(text="no such camera\n")
        return camera

    async def _page_cameras(self, request: web.Request) -> web.Response:
        caller = self._read_or_login(request)
        return self._render(request, "cameras.html", caller, cameras=self.cameras_json())

    async def _page_camera(self, request: web.Request) -> web.Response:
        caller = self._read_or_login(request)
        camera_id = self._camera_or_404(request)
        camera = next(c for c in self.cameras_json() if c["id"] == camera_id)
        return self._render(
            request, "camera.html", caller, camera=camera,
            samples=[s.to_json() for s in self._state.samples(camera_id)],
            alerts=[a.to_json() for a in self._state.alerts(camera=camera_id)][:20])

    async def _page_events(self, request: web.Request) -> web.Response:
        caller = self._read_or_login(request)
        alerts = self._filtered_alerts(request)
        return self._render(request, "events.html", caller,
                            alerts=[a.to_json() for a in alerts[:200]],
                            cameras=[c.camera_id for c in self._state.cameras],
                            filters={k: request.query.get(k, "")
                                     for k in ("camera", "hazard", "since", "until")})

    async def _page_login(self, request: web.Request) -> web.Response:
        return self._render(request, "login.html", Caller(user=None),
                            fields=self._auth.login_fields, failed=False)

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        user = self._auth.check_login(token=str(form.get("token", "")),
                                      username=str(form.get("username", "")),
                                      password=str(form.get("password", "")))
        if user is None:
            response = self._render(request, "login.html", Caller(user=None),
                                    fields=self._auth.login_fields, failed=True)
            response.set_status(401)
            return response
        session_id, _session = self._auth.open_session(user)
        response = web.HTTPSeeOther(location="/")
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict",
                            max_age=int(SESSION_TTL_S), path="/")
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        self._auth.require_action(request, str((await request.post()).get("csrf", "")))
        self._auth.close_session(request)
        response = web.HTTPSeeOther(location="/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        text = (files("monitor.console") / "static" / name).read_text(encoding="utf-8")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(text=text, content_type=kind,
                            headers={"Cache-Control": "public, max-age=300"})

