"""Local stand-ins for the notification services, one aiohttp app for all of them.

Each route checks what the service's documentation says it checks (the key or token in the
URL, the signature, the message type and its fields, sizes, the image's md5) and answers as
the service does: success, or what the test scripted for the next request (``rate``: the
service's rate-limit answer, ``refuse``: its key/signature refusal, ``5xx``, ``timeout``: no
answer for a while). Accepted messages are recorded in ``accepted``; every request, accepted
or not, in ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from monitor.sim.broker import free_port

WECOM_KEY = "wecom-key-3f1c9a7e-55aa-4b2d"
DINGTALK_TOKEN = "dingtalk-token-9b8e7d6c5b4a"
DINGTALK_SECRET = "SECdingtalk-sign-secret-77"
FEISHU_TOKEN = "feishu-hook-token-0a1b2c3d4e5f"
FEISHU_SECRET = "feishu-sign-secret-88"
TELEGRAM_TOKEN = "123456:telegram-bot-token-ABCDEF"
NTFY_TOPIC = "ntfy-topic-secret-4242"
NTFY_TOKEN = "tk_ntfy-access-token-31337"
WEBHOOK_SECRET = "webhook-shared-secret-55"
WEBHOOK_TOKEN = "webhook-query-token-6789"
SECRETS = (WECOM_KEY, DINGTALK_TOKEN, DINGTALK_SECRET, FEISHU_TOKEN, FEISHU_SECRET,
           TELEGRAM_TOKEN, NTFY_TOPIC, NTFY_TOKEN, WEBHOOK_SECRET, WEBHOOK_TOKEN)


@dataclass
class Accepted:
    """A message a service took."""

    service: str
    data: dict[str, Any]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeServices:
    """The services on one local port (see the module docstring)."""

    timeout_sleep_s: float = 3.0
    accepted: list[Accepted] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    script: dict[str, deque[str]] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    def then(self, service: str, *answers: str) -> None:
        """Answer the next requests to ``service`` so, in order (then success again)."""
        self.script.setdefault(service, deque()).extend(answers)

    def url(self, service: str) -> str:
        """The channel URL of ``service`` with the right key/token in it."""
        base = f"http://127.0.0.1:{self.port}"
        return {
            "webhook": f"{base}/hook?token={WEBHOOK_TOKEN}",
            "wecom": f"{base}/cgi-bin/webhook/send?key={WECOM_KEY}",
            "dingtalk": f"{base}/robot/send?access_token={DINGTALK_TOKEN}",
            "feishu": f"{base}/open-apis/bot/v2/hook/{FEISHU_TOKEN}",
            "telegram": base,
            "ntfy": f"{base}/{NTFY_TOPIC}",
        }[service]

    async def start(self) -> None:
        """Listen on a free local port."""
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_post("/hook", self._webhook)
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/robot/send", self._dingtalk)
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self._feishu)
        app.router.add_post("/bot{token}/{method}", self._telegram)
        app.router.add_route("*", "/{topic}", self._ntfy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _scripted(self, service: str) -> str:
        self.requests.append(service)
        answers = self.script.get(service)
        answer = answers.popleft() if answers else "ok"
        if answer == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
        return answer

    # ------------------------------------------------------------ webhook

    async def _webhook(self, request: web.Request) -> web.Response:
        answer = await self._scripted("webhook")
        body = await request.read()
        if request.query.get("token") != WEBHOOK_TOKEN:
            return web.Response(status=401, text="bad token")
        timestamp = request.headers.get("X-Monitor-Timestamp", "")
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"."
                                        + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Monitor-Signature", ""), expected):
            return web.Response(status=401, text="bad signature")
        if abs(time.time() - int(timestamp)) > 300:
            return web.Response(status=401, text="stale timestamp")
        if answer == "rate":
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if answer in {"5xx", "timeout"}:
            return web.Response(status=503, text="unavailable")
        if answer == "refuse":
            return web.Response(status=403, text="forbidden")
        if answer == "reject":
            return web.Response(status=422, text="unknown event")
        data = json.loads(body)
        assert data["notification"]["key"] == request.headers["Idempotency-Key"]
        self.accepted.append(Accepted("webhook", data, dict(request.headers)))
        return web.Response(status=204)

    # ------------------------------------------------------------ WeCom

    async def _wecom(self, request: web.Request) -> web.Response:
        answer = await self._scripted("wecom")
        if request.query.get("key") != WECOM_KEY or answer == "refuse":
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        if answer == "rate":
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        if answer in {"5xx", "timeout"}:
            return web.Response(status=502)
        data = await request.json()
        msgtype = data.get("msgtype")
        if msgtype == "markdown":
            ok = len(data["markdown"]["content"].encode()) <= 4096
        elif msgtype == "text":
            ok = len(data["text"]["content"].encode()) <= 2048
        elif msgtype == "image":
            try:
                image = base64.b64decode(data["image"]["base64"], validate=True)
            except binascii.Error:
                image = b""
            ok = (0 < len(image) <= 2 * 1024 * 1024 and hashlib.md5(
                image, usedforsecurity=False).hexdigest() == data["image"]["md5"])
        else:
            ok = False
        if not ok:
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        self.accepted.append(Accepted("wecom", data, dict(request.headers)))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    # ------------------------------------------------------------ DingTalk

    async def _dingtalk(self, request: web.Request) -> web.Response:
        answer = await self._scripted("dingtalk")
        if request.query.get("access_token") != DINGTALK_TOKEN:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        timestamp = request.query.get("timestamp", "0")
        sign = base64.b64encode(hmac.new(DINGTALK_SECRET.encode(),
                                         f"{timestamp}\n{DINGTALK_SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
        # The sign arrives URL-encoded in the query (aiohttp decodes the query once).
        given = request.query.get("sign", "")
        stale = abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000
        if answer == "refuse" or stale or not hmac.compare_digest(unquote(given), sign):
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        if answer == "rate":
            return web.json_response({"errcode": 130101, "errmsg": "send too fast"})
        if answer in {"5xx", "timeout"}:
            return web.Response(status=500)
        data = await request.json()
        msgtype = data.get("msgtype")
        ok = (msgtype == "markdown" and bool(data["markdown"].get("title"))
              and bool(data["markdown"].get("text"))) or (
                  msgtype == "text" and bool(data["text"].get("content")))
        if not ok:
            return web.json_response({"errcode": 40035, "errmsg": "missing parameter"})
        self.accepted.append(Accepted("dingtalk", data, dict(request.headers)))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    # ------------------------------------------------------------ Feishu

    async def _feishu(self, request: web.Request) -> web.Response:
        answer = await self._scripted("feishu")
        if request.match_info["token"] != FEISHU_TOKEN:
            return web.json_response({"code": 19001, "msg": "param invalid: incoming webhook "
                                      "access token invalid", "data": {}}, status=400)
        data = await request.json()
        timestamp = str(data.get("timestamp", "0"))
        sign = base64.b64encode(hmac.new(f"{timestamp}\n{FEISHU_SECRET}".encode(), b"",
                                         hashlib.sha256).digest()).decode()
        if answer == "refuse" or data.get("sign") != sign or abs(time.time()
                                                                 - int(timestamp)) > 3600:
            return web.json_response({"code": 19021, "msg": "sign match fail or timestamp "
                                      "is not within one hour from current time", "data": {}},
                                     status=400)
        if answer == "rate":
            return web.json_response({"code": 11232, "msg": "frequency limited psm",
                                      "data": {}})
        if answer in {"5xx", "timeout"}:
            return web.Response(status=500)
        if data.get("msg_type") != "text" or not data.get("content", {}).get("text") \
                or len(await request.read()) > 20 * 1024:
            return web.json_response({"code": 9499, "msg": "Bad Request", "data": {}})
        self.accepted.append(Accepted("feishu", data, dict(request.headers)))
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    # ------------------------------------------------------------ Telegram

    async def _telegram(self, request: web.Request) -> web.Response:
        answer = await self._scripted("telegram")
        if request.match_info["token"] != TELEGRAM_TOKEN or answer == "refuse":
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        if answer == "rate":
            return web.json_response({"ok": False, "error_code": 429, "description":
                                      "Too Many Requests: retry after 1",
                                      "parameters": {"retry_after": 1}}, status=429)
        if answer in {"5xx", "timeout"}:
            return web.json_response({"ok": False, "error_code": 502,
                                      "description": "Bad Gateway"}, status=502)
        method = request.match_info["method"]
        if method == "sendPhoto":
            form = await request.post()
            photo = form.get("photo")
            caption = str(form.get("caption", ""))
            if not isinstance(photo, web.FileField) or len(caption) > 1024:
                return web.json_response({"ok": False, "error_code": 400,
                                          "description": "Bad Request: no photo"}, status=400)
            image = photo.file.read()
            data = {"method": method, "chat_id": str(form.get("chat_id")),
                    "caption": caption, "photo_bytes": len(image)}
            body = image
        elif method == "sendMessage":
            payload = await request.json()
            if len(payload.get("text", "")) > 4096:
                return web.json_response({"ok": False, "error_code": 400,
                                          "description": "Bad Request: message is too long"},
                                         status=400)
            data = {"method": method, **payload}
            body = b""
        else:
            return web.json_response({"ok": False, "error_code": 404,
                                      "description": "Not Found"}, status=404)
        self.accepted.append(Accepted("telegram", data, dict(request.headers), body))
        return web.json_response({"ok": True, "result": {"message_id": len(self.accepted)}})

    # ------------------------------------------------------------ ntfy

    async def _ntfy(self, request: web.Request) -> web.Response:
        answer = await self._scripted("ntfy")
        if request.match_info["topic"] != NTFY_TOPIC:
            return web.json_response({"code": 40401, "http": 404, "error": "page not found"},
                                     status=404)
        if request.headers.get("Authorization") != f"Bearer {NTFY_TOKEN}" \
                or answer == "refuse":
            return web.json_response({"code": 40101, "http": 401, "error": "unauthorized"},
                                     status=401)
        if answer == "rate":
            return web.json_response({"code": 42901, "http": 429, "error": "limit reached"},
                                     status=429, headers={"Retry-After": "1"})
        if answer in {"5xx", "timeout"}:
            return web.Response(status=500)
        body = await request.read()
        data = {"method": request.method, "title": request.headers.get("Title", ""),
                "tags": request.headers.get("Tags", ""),
                "priority": request.headers.get("Priority", ""),
                "filename": request.headers.get("Filename", ""),
                "message": request.headers.get("Message", "")}
        self.accepted.append(Accepted("ntfy", data, dict(request.headers), body))
        return web.json_response({"id": f"m{len(self.accepted)}", "event": "message"})
