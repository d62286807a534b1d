"""An OpenAI-compatible HTTP server that plays Qwen2.5-VL on vLLM, judging images by pixels.

Endpoints (vLLM's where vLLM has them)::

    GET  /health                  200, empty body, once serving
    GET  /v1/models               {"object": "list", "data": [{"id": MODEL, ...}]}
    POST /v1/chat/completions     one image per request -> ChatCompletion
    GET  /sim/behaviour           the fault-injection settings (SimBehaviour as JSON)
    POST /sim/behaviour           partial update of them, e.g. {"fail_rate": 1}; returns all
    GET  /sim/stats               request counts by outcome, and requests in flight
    DELETE /sim/stats             reset the counts

Chat completions are validated the way vLLM does it, with vLLM's error body
``{"object": "error", "error": {"message", "type", "param", "code"}}`` (the ``error`` object is
what newer vLLM and the ``openai`` client read; ``object`` is kept from vLLM's older flat form):
an unknown model is 404 ``NotFoundError``; no image, more than one image, an ``http(s)`` image
URL (the simulator fetches nothing: send ``data:image/...;base64,...``), an image that does
not decode (400 ``Failed to load image: ...``) or a malformed body are 400
``BadRequestError``; ``stream: true`` is 400 too (not simulated).

The answer: with ``response_format`` of type ``json_schema`` or ``json_object``, or vLLM's
``structured_outputs`` extra, the content is the flat :class:`~monitor.model.answer.WireDecision`
(the schema ``monitor`` sends) as compact JSON; the legacy ``guided_json`` extra is ignored,
as current vLLM silently ignores it (measured: shared/docs/vllm-cpu.md), so a client relying
on it gets text here too;
otherwise the seed guide's text format, in Chinese when any text of the request contains CJK
characters and in English otherwise. Descriptions follow the same language rule.
``max_tokens`` / ``max_completion_tokens`` below the answer's estimated length cut the content
and give ``finish_reason: "length"``, as vLLM would.

Usage: ``prompt_tokens`` is the image's tokens by Qwen2.5-VL's rule (``image_tokens`` of the
received image's size, ``max_pixels`` 12845056, vLLM's default) plus a rough estimate of the
text tokens and the chat template's; ``completion_tokens`` is a rough estimate of the answer's.

Service time (a GPU server's shape): a request is in service for ``latency_s +
latency_per_image_token_s * image tokens + latency_per_completion_token_s * completion tokens``;
at most ``batch_capacity`` requests are in service at once (0: no limit) and the rest wait in
arrival order, as requests beyond vLLM's ``--max-num-seqs`` do.

Fault injection (:class:`SimBehaviour`) is drawn from one seeded ``random.Random`` per server,
four draws per valid request in a fixed order (hang, fail, prose, other content faults), so a
run with the same requests in the same order behaves the same. A request can also name its
fault in the ``X-Sim-Fault`` header, and ``SimBehaviour.fault`` applies one to every request;
the kinds (:data:`FAULT_KINDS`):

==================  ===========================================================================
``500`` ``503``     that HTTP status at once (vLLM's error body)
``429``             HTTP 429 with ``Retry-After: 0``
``timeout``         no answer until the client gives up (or ``hang_s`` runs out)
``reset``           the TCP connection is reset (RST) without an answer
``bad_body``        HTTP 200 whose body is not JSON
``malformed_json``  an answer that is JSON cut off mid-way
``schema_violation`` valid JSON that does not match the answer's schema
``prose``           prose instead of an answer (also ``bad_answer_rate``)
``long``            an endless answer, cut at ``max_tokens`` (``finish_reason: "length"``)
``empty_choices``   a completion with ``"choices": []``
==================  ===========================================================================

Zoom-in questions (a request whose text is one of :data:`monitor.model.verify.CROP_QUESTIONS`)
are answered about the crop they carry (:func:`monitor.sim.vision.answer_crop`): compact JSON of
:class:`~monitor.model.verify.CropAnswer` with a response format, else ``no, orange vest``.

Structured answers are compact JSON without the fields that are empty or default (what a model
told "omit them when there is nothing to report" writes, and what the schema allows); hard-hat
answers carry a grounding box per person without a hard hat, in pixels of the received image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import logging
import math
import random
import re
import signal
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

import cv2
import numpy as np
from aiohttp import web

from monitor.model.answer import (
    Answer,
    Decision,
    Hazard,
    HazardFinding,
    HelmetFinding,
    HelmetStatus,
    WireAnswer,
)
from monitor.model.imaging import image_tokens
from monitor.model.verify import CROP_QUESTIONS, CropAnswer
from monitor.sim.scenes import BgrImage, Language
from monitor.sim.vision import answer_crop, judge, seed_text, terse

LOG = logging.getLogger(__name__)

DEFAULT_MODEL_NAME: Final = "Qwen2.5-VL"
VLLM_MAX_PIXELS: Final = 12845056
"""vLLM's default ``max_pixels`` for Qwen2.5-VL (16384 * 28 * 28)."""
MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
"""aiohttp's default body limit (1 MiB) is below a base64 full-HD PNG; vLLM has no such cap."""
SHUTDOWN_GRACE_S: Final = 5.0

_MESSAGE_OVERHEAD_TOKENS = 5
"""Qwen's chat template per message: ``<|im_start|>role\\n`` ... ``<|im_end|>\\n``."""
_IMAGE_OVERHEAD_TOKENS = 2
"""``<|vision_start|>`` and ``<|vision_end|>`` around the image pads."""
_GENERATION_PROMPT_TOKENS = 3
"""``<|im_start|>assistant\\n`` that opens the answer."""

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,(?P<data>.*)", re.DOTALL)

_FAIL_STATUSES: Final = {500: "InternalServerError", 503: "ServiceUnavailableError",
                         429: "RateLimitError"}

_BAD_ANSWERS: Final = (
    ("I'm sorry, but I can't determine the safety conditions in this picture with confidence. "
     "It appears to show an outdoor area, possibly a construction site."),
    ("The image shows a scene outdoors. There may or may not be hazards; please consult a "
     "qualified safety officer for a definitive assessment."),
    "这张图片看起来是一个户外场景，但我无法给出明确的判断，请人工复核。",
    "Sure! Here is a description of the image: a blue sky, some brown ground and a truck.",
)
"""Prose that is neither JSON nor the seed format (``bad_answer_rate``)."""

Outcome = Literal["ok", "bad_answer", "failed", "hung", "not_found", "bad_request",
                  "cancelled", "shutting_down", "reset"]

FAULT_KINDS: Final = ("500", "503", "429", "timeout", "reset", "bad_body", "malformed_json",
                      "schema_violation", "prose", "long", "empty_choices")
"""What ``X-Sim-Fault`` and ``SimBehaviour.fault`` accept (see the module docstring)."""
FAULT_HEADER: Final = "X-Sim-Fault"
_CONTENT_FAULT_RATES: Final = ("reset_rate", "malformed_json_rate", "schema_violation_rate",
                               "long_answer_rate", "empty_choices_rate")
_CONTENT_FAULT_KINDS: Final = ("reset", "malformed_json", "schema_violation", "long",
                               "empty_choices")
_LONG_SENTENCE = ("The image shows an outdoor construction site under a clear sky, and I will "
                  "now describe every part of it in great detail, region by region. ")
_SCHEMA_VIOLATION = ('{"fire":{"answer":"maybe","confidence":0.4},"smoke":"no",'
                     '"helmet":{"status":"all_worn","missing_count":-1}}')


_NO_ANSWER: Final = Answer(fire=HazardFinding(answer=Decision.NO),
                           smoke=HazardFinding(answer=Decision.NO),
                           helmet=HelmetFinding(status=HelmetStatus.NO_PERSON))
"""What a content fault of a zoom-in answer cuts up or replaces (any answer serves)."""


# --- Behaviour. ---------------------------------------------------------------------------------

_FLOAT_FIELDS = frozenset({"latency_s", "latency_per_image_token_s",
                           "latency_per_completion_token_s", "fail_rate", "hang_rate", "hang_s",
                           "bad_answer_rate", *_CONTENT_FAULT_RATES})
_INT_FIELDS = frozenset({"status_code_on_fail", "seed", "batch_capacity"})
_BOOL_FIELDS = frozenset({"force_text"})
_RATE_FIELDS = ("fail_rate", "hang_rate", "bad_answer_rate", *_CONTENT_FAULT_RATES)


@dataclass(frozen=True, slots=True)
class SimBehaviour:
    """Fault injection and timing of the simulated model; every field has a harmless default.

    Rates are probabilities per valid request (0..1). A request first may hang (``hang_rate``:
    no answer for ``hang_s`` seconds, until the client gives up or the server stops), else may
    fail (``fail_rate``: HTTP ``status_code_on_fail`` at once), else is answered after
    the service time (module docstring) once one of ``batch_capacity`` slots is free, with
    prose instead of an answer at ``bad_answer_rate``, else with one of the other faults at
    ``reset_rate``, ``malformed_json_rate``, ``schema_violation_rate``, ``long_answer_rate``,
    ``empty_choices_rate`` (one draw; these rates must sum to at most 1). ``fault`` names a
    fault every request gets (``""``: none). ``force_text`` answers in the seed text format even
    when the request asks for JSON (a server without guided decoding). ``seed`` seeds the dice;
    setting it at run time restarts them.
    """

    latency_s: float = 0.0
    latency_per_image_token_s: float = 0.0
    latency_per_completion_token_s: float = 0.0
    batch_capacity: int = 0
    fail_rate: float = 0.0
    status_code_on_fail: int = 500
    hang_rate: float = 0.0
    hang_s: float = 3600.0
    bad_answer_rate: float = 0.0
    reset_rate: float = 0.0
    malformed_json_rate: float = 0.0
    schema_violation_rate: float = 0.0
    long_answer_rate: float = 0.0
    empty_choices_rate: float = 0.0
    fault: str = ""
    force_text: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            # bool is an int subclass; True as a latency is a mistake, not 1 second.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in _RATE_FIELDS:
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a probability within 0..1, got {getattr(self, name)}")
        if self.status_code_on_fail not in _FAIL_STATUSES:
            raise ValueError(f"status_code_on_fail must be one of {sorted(_FAIL_STATUSES)}, "
                             f"got {self.status_code_on_fail}")
        if self.batch_capacity < 0:
            raise ValueError(f"batch_capacity must be >= 0 (0: no limit), got "
                             f"{self.batch_capacity}")
        if sum(getattr(self, name) for name in _CONTENT_FAULT_RATES) > 1:
            raise ValueError(f"{' + '.join(_CONTENT_FAULT_RATES)} must not exceed 1")
        if not isinstance(self.fault, str) or (self.fault and self.fault not in FAULT_KINDS):
            raise ValueError(f"fault must be empty or one of {', '.join(FAULT_KINDS)}, "
                             f"got {self.fault!r}")

    def updated(self, changes: Mapping[str, object]) -> SimBehaviour:
        """A copy with ``changes`` applied (unknown names and bad values raise ValueError or
        TypeError; nothing is applied then)."""
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown behaviour setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        return dataclasses.asdict(self)


# --- Request parsing. ---------------------------------------------------------------------------


class _HttpError(Exception):
    """A request rejected with an OpenAI/vLLM-shaped error body."""

    def __init__(self, status: int, message: str, error_type: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.outcome = outcome


def _bad_request(message: str) -> _HttpError:
    return _HttpError(400, message, "BadRequestError", "bad_request")


def error_body(status: int, message: str, error_type: str) -> dict[str, Any]:
    """vLLM's error JSON (see the module docstring for the shape)."""
    return {"object": "error",
            "error": {"message": message, "type": error_type, "param": None, "code": status}}


def _error_response(error: _HttpError) -> web.Response:
    return web.json_response(error_body(error.status, error.message, error.error_type),
                             status=error.status)


_PIECES = re.compile(
    r"(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff]+)|(?P<word>[A-Za-z]+)|(?P<digit>\d)"
    r"|(?P<space>\s+)|(?P<other>[^\sA-Za-z\d\u3400-\u4dbf\u4e00-\u9fff]+)")
_CJK_CHARS_PER_TOKEN = 1.4
"""Qwen2's byte-level BPE has most common Chinese words as single tokens: ~1.4 characters
per token on ordinary Chinese text."""


def estimate_text_tokens(text: str) -> int:
    """A rough Qwen2-tokenizer count, following its pre-tokenizer's split.

    Chinese runs: one token per 1.4 characters; a run of letters: one token per 6 (a space in
    front belongs to the word, as in Qwen's split); every digit one token (Qwen splits numbers
    into digits); a run of other symbols one token per three characters (byte-level BPE
    vocabularies like Qwen2's hold JSON's ``{"``, ``":"``, ``","`` and ``"}`` as single
    tokens); whitespace: one token per run that holds a line break.
    """
    tokens = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        kind = match.lastgroup
        if kind == "cjk":
            tokens += math.ceil(len(piece) / _CJK_CHARS_PER_TOKEN)
        elif kind == "word":
            tokens += math.ceil(len(piece) / 6)
        elif kind == "digit":
            tokens += 1
        elif kind == "other":
            tokens += math.ceil(len(piece) / 3)
        elif "\n" in piece:
            tokens += 1
    return tokens


@dataclass(frozen=True, slots=True)
class _ChatRequest:
    texts: list[str]
    image_urls: list[str]
    message_count: int
    structured: bool
    max_tokens: int | None
    fault: str | None

    @property
    def language(self) -> Language:
        return "zh" if any(_CJK.search(text) for text in self.texts) else "en"

    @property
    def crop_question(self) -> Hazard | None:
        """The hazard of the zoom-in question the request asks (``None``: a whole frame)."""
        return next((hazard for (_, hazard), question in CROP_QUESTIONS.items()
                     if question in self.texts), None)


def _parse_chat_request(body: object, model_name: str, fault: str | None = None) -> _ChatRequest:
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")
    model = body.get("model", model_name)
    if model != model_name:
        raise _HttpError(404, f"The model `{model}` does not exist.", "NotFoundError",
                         "not_found")
    if body.get("stream"):
        raise _bad_request("The VLM simulator does not support streaming; send stream=false.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_request("`messages` must be a non-empty list.")
    texts: list[str] = []
    image_urls: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad_request("Each message must be an object with a `role`.")
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            raise _bad_request("Message `content` must be a string or a list of parts.")
        for part in content:
            if not isinstance(part, dict):
                raise _bad_request("Each content part must be an object.")
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if not isinstance(url, str):
                    raise _bad_request("An image_url part needs `image_url.url` (a string).")
                image_urls.append(url)
            else:
                raise _bad_request(f"Unsupported content part type {kind!r} (the simulator "
                                   f"takes `text` and `image_url`).")
    if len(image_urls) > 1:
        raise _bad_request(f"At most 1 image(s) may be provided in one request; got "
                           f"{len(image_urls)}.")
    if not image_urls:
        raise _bad_request("The VLM simulator judges exactly one image per request; the "
                           "request has none.")
    response_format = body.get("response_format")
    structured = (
        isinstance(response_format, dict)
        and response_format.get("type") in ("json_schema", "json_object")
    ) or isinstance(body.get("structured_outputs"), dict)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise _bad_request(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    return _ChatRequest(texts=texts, image_urls=image_urls, message_count=len(messages),
                        structured=structured, max_tokens=max_tokens, fault=fault)


def _decode_image(url: str) -> BgrImage:
    """The image of a data URL, or a 400 saying why not (blocking: run it in a thread)."""
    if url.startswith(("http://", "https://")):
        raise _bad_request("The VLM simulator only accepts data URLs "
                           "(data:image/...;base64,...); it does not fetch http(s) images.")
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise _bad_request("Failed to load image: expected a data:image/<format>;base64,<data> "
                           f"URL, got one starting {url[:40]!r}.")
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad_request(f"Failed to load image: invalid base64 data ({exc}).") from None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise _bad_request(f"Failed to load image: cannot identify image file "
                           f"({len(data)} bytes).")
    return np.asarray(image, dtype=np.uint8)


# --- The server. --------------------------------------------------------------------------------


class SimServer:
    """The simulator as an aiohttp server in the running event loop.

    ``await start(host, port)`` (port 0 picks a free one) or ``async with SimServer() as sim``
    (127.0.0.1, free port); then ``sim.base_url`` is what an OpenAI client takes
    (``http://127.0.0.1:PORT/v1``). ``stop()`` ends hanging and delayed requests at once (they
    get 503), so it returns promptly.
    """

    def __init__(self, behaviour: SimBehaviour | None = None, *,
                 model_name: str = DEFAULT_MODEL_NAME, max_model_len: int = 32768) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._behaviour = behaviour or SimBehaviour()
        self._rng = random.Random(self._behaviour.seed)
        self._counts: Counter[str] = Counter()
        self._in_flight = 0
        self._in_service = 0
        self._max_in_service = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._host = "127.0.0.1"
        self._port: int | None = None

    # -- lifecycle --

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0: a free port, see :attr:`port`)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([
            web.get("/health", self._health),
            web.get("/v1/models", self._models),
            web.post("/v1/chat/completions", self._chat_completions),
            web.get("/sim/behaviour", self._get_behaviour),
            web.post("/sim/behaviour", self._post_behaviour),
            web.get("/sim/stats", self._get_stats),
            web.delete("/sim/stats", self._delete_stats),
        ])
        # handler_cancellation: a client that gives up (timeout) cancels its request's handler,
        # as a disconnect aborts a request in vLLM, so a hang does not outlive its client.
        runner = web.AppRunner(app, handler_cancellation=True,
                               shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._closing.clear()
        address = runner.addresses[0]
        self._port = int(address[1])
        # A wildcard listen address is not something a client can connect to.
        self._host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
        LOG.info("VLM simulator serving model %r at %s", self.model_name, self.base_url)

    async def stop(self) -> None:
        """Stop listening; requests still waiting (latency, hang) are answered 503 first."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        await runner.cleanup()
        LOG.info("VLM simulator stopped")

    async def __aenter__(self) -> SimServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/v1"

    # -- behaviour and statistics --

    @property
    def behaviour(self) -> SimBehaviour:
        """The current fault-injection settings."""
        return self._behaviour

    def set_behaviour(self, **changes: object) -> SimBehaviour:
        """Change some settings (same as ``POST /sim/behaviour``); returns the new settings."""
        new = self._behaviour.updated(changes)
        if "seed" in changes:
            self._rng.seed(new.seed)
        self._behaviour = new
        self._admit()  # a larger batch capacity lets waiting requests in
        LOG.info("VLM simulator behaviour: %s", new)
        return new

    @property
    def stats(self) -> dict[str, int]:
        """Requests so far: ``requests`` in all and one count per outcome, plus ``in_flight``
        and the answer forms (``json_answers``, ``text_answers``; ``crop_answers``: answers to
        zoom-in questions).

        ``hung`` counts requests that started hanging; each of them also ends up counted as
        ``cancelled`` (its client gave up) or ``shutting_down`` (server stopped or ``hang_s``
        ran out). ``cancelled`` counts any request whose client went away before the answer.
        """
        return {"requests": self._counts["requests"], **{
            outcome: self._counts[outcome] for outcome in (
                "ok", "bad_answer", "failed", "hung", "not_found", "bad_request", "cancelled",
                "shutting_down", "reset", "json_answers", "text_answers", "queued",
                "prompt_tokens", "completion_tokens", "crop_answers")
        }, **{f"fault_{kind}": self._counts[f"fault_{kind}"] for kind in FAULT_KINDS},
            "in_flight": self._in_flight, "in_service": self._in_service,
            "max_in_service": self._max_in_service}

    def reset_stats(self) -> None:
        """Zero the counts (requests in flight are still counted as such)."""
        self._counts.clear()
        self._max_in_service = self._in_service

    # -- the service-time model --

    def _admit(self) -> None:
        capacity = self._behaviour.batch_capacity
        while self._queue and (capacity == 0 or self._in_service < capacity):
            waiter = self._queue.popleft()
            if not waiter.done():
                self._enter_service()
                waiter.set_result(None)

    def _enter_service(self) -> None:
        self._in_service += 1
        self._max_in_service = max(self._max_in_service, self._in_service)

    @contextlib.asynccontextmanager
    async def _service_slot(self) -> Any:
        """A place in the simulated batch; beyond ``batch_capacity``, wait in arrival order."""
        capacity = self._behaviour.batch_capacity
        if not self._queue and (capacity == 0 or self._in_service < capacity):
            self._enter_service()
        else:
            self._counts["queued"] += 1
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._leave_service()
                with contextlib.suppress(ValueError):
                    self._queue.remove(waiter)
                raise
        try:
            yield
        finally:
            self._leave_service()

    def _leave_service(self) -> None:
        self._in_service -= 1
        self._admit()

    # -- handlers --

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": self._created,
            "owned_by": "vllm", "root": self.model_name, "parent": None,
            "max_model_len": self.max_model_len, "permission": [],
        }]})

    async def _get_behaviour(self, _request: web.Request) -> web.Response:
        return web.json_response(self._behaviour.to_dict())

    async def _post_behaviour(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:  # json.JSONDecodeError and undecodable bytes
            changes = None
        if not isinstance(changes, dict):
            return web.json_response(
                error_body(400, "The body must be a JSON object of settings.", "BadRequestError"),
                status=400)
        try:
            self.set_behaviour(**changes)
        except (ValueError, TypeError) as exc:
            return web.json_response(error_body(400, str(exc), "BadRequestError"), status=400)
        return web.json_response(self._behaviour.to_dict())

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def _delete_stats(self, _request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats)

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; True when it stopped."""
        if seconds <= 0:
            return self._closing.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        return self._closing.is_set()

    async def _chat_completions(self, request: web.Request) -> web.Response:
        self._counts["requests"] += 1
        self._in_flight += 1
        try:
            response, outcome = await self._answer(request)
        except asyncio.CancelledError:
            self._counts["cancelled"] += 1
            raise
        finally:
            self._in_flight -= 1
        self._counts[outcome] += 1
        return response

    def _content(self, chat: _ChatRequest, answer: Answer, fault: str,
                 prose_roll: float) -> tuple[str, Outcome]:
        """The answer's text, or what a content fault puts in its place."""
        if fault == "prose":
            return _BAD_ANSWERS[int(prose_roll * 1e6) % len(_BAD_ANSWERS)], "bad_answer"
        if fault == "malformed_json":
            whole = _json_answer(answer)
            return whole[: len(whole) // 2], "bad_answer"
        if fault == "schema_violation":
            return _SCHEMA_VIOLATION, "bad_answer"
        if fault == "long":
            return _LONG_SENTENCE * 400, "bad_answer"
        if chat.structured and not self._behaviour.force_text:
            self._counts["json_answers"] += 1
            return _json_answer(answer), "ok"
        self._counts["text_answers"] += 1
        return seed_text(answer, chat.language), "ok"

    def _crop_content(self, chat: _ChatRequest, answer: CropAnswer, fault: str,
                      prose_roll: float) -> tuple[str, Outcome]:
        """A zoom-in answer's text (JSON, or ``no, orange vest``), or a content fault's."""
        if fault in ("prose", "malformed_json", "schema_violation", "long"):
            return self._content(chat, _NO_ANSWER, fault, prose_roll)
        self._counts["crop_answers"] += 1
        if chat.structured and not self._behaviour.force_text:
            return answer.model_dump_json(exclude_defaults=True), "ok"
        seen = f", {answer.seen}" if answer.seen else ""
        return f"{answer.answer.value}{seen}", "ok"

    async def _answer(self, request: web.Request) -> tuple[web.Response, Outcome]:
        header_fault = request.headers.get(FAULT_HEADER)
        try:
            if header_fault is not None and header_fault not in FAULT_KINDS:
                raise _bad_request(f"{FAULT_HEADER} must be one of {', '.join(FAULT_KINDS)}; "
                                   f"got {header_fault!r}.")
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _bad_request("The request body is not valid JSON.") from None
            chat = _parse_chat_request(body, self.model_name, header_fault)
            image = await asyncio.to_thread(_decode_image, chat.image_urls[0])
        except _HttpError as rejection:
            LOG.debug("rejected chat completion: %s", rejection.message)
            return _error_response(rejection), rejection.outcome
        behaviour = self._behaviour
        # Always four draws in this order, so outcomes depend only on the request sequence.
        rolls = [self._rng.random() for _ in range(4)]
        fault = chat.fault or behaviour.fault or _drawn_fault(behaviour, *rolls)
        if fault:
            self._counts[f"fault_{fault}"] += 1
        height, width = image.shape[:2]
        tokens = image_tokens(height, width, max_pixels=VLLM_MAX_PIXELS)
        if fault == "timeout":
            self._counts["hung"] += 1
            await self._wait(behaviour.hang_s)
            # Only reached when the hang ran out or the server stops; a client that gave up
            # has cancelled this handler already.
            error = _HttpError(503, "The simulated hang ended without an answer.",
                               "ServiceUnavailableError", "shutting_down")
            return _error_response(error), "shutting_down"
        immediate = _immediate_fault(request, fault)
        if immediate is not None:
            return immediate
        prompt_tokens = (
            tokens + _IMAGE_OVERHEAD_TOKENS + _GENERATION_PROMPT_TOKENS
            + chat.message_count * _MESSAGE_OVERHEAD_TOKENS
            + sum(estimate_text_tokens(text) for text in chat.texts)
        )
        if prompt_tokens + (chat.max_tokens or 0) > self.max_model_len:
            # vLLM's wording, so clients can recognise it.
            error = _bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {prompt_tokens + (chat.max_tokens or 0)} tokens "
                f"({prompt_tokens} in the messages, {chat.max_tokens or 0} in the completion). "
                f"Please reduce the length of the messages or completion.")
            return _error_response(error), "bad_request"
        question = chat.crop_question
        if question is not None:
            # A zoom-in question about a crop: a tiny answer of its own schema.
            checked = await asyncio.to_thread(answer_crop, image, question, chat.language)
            content, outcome = self._crop_content(chat, checked, fault, rolls[2])
        else:
            answer: Answer = await asyncio.to_thread(judge, image, chat.language)
            content, outcome = self._content(chat, answer, fault, rolls[2])
        completion_tokens = estimate_text_tokens(content) + 1  # + <|im_end|>
        finish_reason = "stop"
        if chat.max_tokens is not None and completion_tokens > chat.max_tokens:
            # Cut like a length-limited generation: the text stops mid-way.
            keep = len(content) * chat.max_tokens // completion_tokens
            content, completion_tokens, finish_reason = content[:keep], chat.max_tokens, "length"
        service_s = (behaviour.latency_s + behaviour.latency_per_image_token_s * tokens
                     + behaviour.latency_per_completion_token_s * completion_tokens)
        async with self._service_slot():
            if await self._wait(service_s):
                error = _HttpError(503, "The VLM simulator is shutting down.",
                                   "ServiceUnavailableError", "shutting_down")
                return _error_response(error), "shutting_down"
        self._counts["prompt_tokens"] += prompt_tokens
        self._counts["completion_tokens"] += completion_tokens
        LOG.debug("chat completion %dx%d (%d image tokens): %s", width, height, tokens, outcome)
        choices = [] if fault == "empty_choices" else [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "tool_calls": []},
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }]
        if fault == "empty_choices":
            outcome = "bad_answer"
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }), outcome


def _immediate_fault(request: web.Request, fault: str) -> tuple[web.Response, Outcome] | None:
    """The response of a fault that needs no answer: an HTTP error, a reset, a bad body."""
    if fault in ("500", "503", "429"):
        status = int(fault)
        error = _HttpError(status, f"Simulated failure (HTTP {status}).",
                           _FAIL_STATUSES[status], "failed")
        response = _error_response(error)
        if status == 429:
            response.headers["Retry-After"] = "0"
        return response, "failed"
    if fault == "reset":
        _reset_connection(request)
        return web.Response(status=500), "reset"
    if fault == "bad_body":
        # What a misconfigured proxy in front of the server may send.
        return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                            content_type="application/json"), "bad_answer"
    return None


def _json_answer(answer: Answer) -> str:
    """Compact JSON without empty or default fields (see the module docstring)."""
    return WireAnswer.from_answer(terse(answer)).model_dump_json(exclude_defaults=True)


def _drawn_fault(behaviour: SimBehaviour, hang_roll: float, fail_roll: float, prose_roll: float,
                 fault_roll: float) -> str:
    """The fault the dice give (``""``: none): hang, then failure, then prose, then one of the
    content faults by their cumulative rates."""
    if hang_roll < behaviour.hang_rate:
        return "timeout"
    if fail_roll < behaviour.fail_rate:
        return str(behaviour.status_code_on_fail)
    if prose_roll < behaviour.bad_answer_rate:
        return "prose"
    threshold = 0.0
    for rate_name, kind in zip(_CONTENT_FAULT_RATES, _CONTENT_FAULT_KINDS, strict=True):
        threshold += getattr(behaviour, rate_name)
        if fault_roll < threshold:
            return kind
    return ""


def _reset_connection(request: web.Request) -> None:
    """Reset the client's TCP connection (RST, not a clean close), as a crashing server or a
    dropped NAT entry does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on with a zero timeout: close() sends RST and discards unsent data.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- Blocking entry point (``monitor sim-vlm``). ------------------------------------------------


def run_sim_server(host: str = "127.0.0.1", port: int = 8000,
                   behaviour: SimBehaviour | None = None,
                   model_name: str = DEFAULT_MODEL_NAME, *,
                   on_ready: Callable[[SimServer], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly and return.

    ``on_ready`` is called once the server listens (e.g. to print a READY line for a parent
    process); the address is also logged at INFO.
    """
    asyncio.run(_serve_until_signal(host, port, behaviour, model_name, on_ready))


async def _serve_until_signal(host: str, port: int, behaviour: SimBehaviour | None,
                              model_name: str,
                              on_ready: Callable[[SimServer], None] | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows; asyncio.run's own Ctrl-C handling
        # (KeyboardInterrupt) still stops the server there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    server = SimServer(behaviour, model_name=model_name)
    try:
        await server.start(host, port)
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        await server.stop()
        for signum in installed:
            loop.remove_signal_handler(signum)
