"""The model client: one chat-completion request per frame to vLLM's OpenAI-compatible API.

This is the code production uses against real vLLM; tests point it at the simulator.

* Requests are cheap for the GPU (see :mod:`monitor.model.prompts`): a byte-identical prefix first
  (system prompt, instructions) so vLLM's prefix cache reuses it, the image and the camera's
  context last; ``temperature: 0``; a short ``max_tokens``; and ``response_format`` of type
  ``json_schema``, which vLLM enforces. vLLM's legacy ``guided_json`` extra is silently ignored
  by current versions (measured: shared/docs/vllm-cpu.md), so it is never used.
* Several servers (``[[vlm.endpoints]]``) form an :class:`~monitor.model.endpoints.EndpointPool`:
  fewest-in-flight routing, a per-endpoint concurrency limit, fair first-come-first-served
  waiting, and circuit breakers that probe ``GET /v1/models`` until a server answers again.
* Slot first, then the frame. ``async with client.request(camera_id) as request`` is one
  camera's request (one in flight per camera: :class:`VlmCameraBusyError` otherwise), and
  ``async with request.slot() as slot`` waits for a place on an endpoint. Only then does the
  caller pick the camera's freshest frame, check its age (:meth:`ModelSlot.check_age`: older
  than ``max_frame_age_s`` is dropped, :class:`VlmStaleFrameError`), encode it and call
  :meth:`ModelSlot.analyse`. A failure worth retrying ends the slot's block quietly; the next
  ``request.slot()`` backs off first, so a retry takes a slot again and sends the frame that is
  freshest then (never one that went stale while backing off)::

      async with client.request(camera_id) as request:
          while True:
              async with request.slot() as slot:
                  frame = newest_frame()
                  slot.check_age(frame.captured_at, now=time.time())
                  return await slot.analyse(encode(frame), captured_at=frame.captured_at)

  :meth:`VlmClient.analyse_image` is that loop for an image already encoded (still images:
  ``monitor analyze``, ``eval``, ``probe``). The client never calls back into its caller.
* ``AsyncOpenAI`` gets an explicit ``timeout`` (its default is ten minutes) and
  ``max_retries=0``: retries are done here, so they can move to another endpoint and feed the
  breakers. Connection errors, timeouts, 429 and 5xx are retried with full-jitter backoff
  (``Retry-After`` honoured, capped); 400/404/413/422 are not, and the error says which
  request was refused and why.

Exceptions::

    Exception
    └── VlmError                    (the frame was not analysed; the message says why)
        ├── VlmUnavailableError     (unreachable, timed out, 429/5xx after retries, or every
        │                            endpoint out of service)
        ├── VlmRequestRejectedError (the server refused this request: 400/401/403/404/413/422)
        ├── VlmAnswerError          (the server answered, the answer is unusable)
        ├── VlmStaleFrameError      (the frame was too old when its turn came; not sent)
        └── VlmCameraBusyError      (the camera already has a request in flight)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import openai
from openai import AsyncOpenAI

from monitor.backoff import backoff_s
from monitor.config import EndpointConfig, VlmConfig
from monitor.errors import exception_reason
from monitor.model.answer import (
    Answer,
    Hazard,
    InvalidAnswerError,
    Verdict,
    answer_json_schema,
    parse_answer,
    truncate,
)
from monitor.model.endpoints import CircuitBreaker, Endpoint, EndpointPool, NoEndpointError
from monitor.model.imaging import EncodedImage
from monitor.model.priority import Urgency
from monitor.model.prompts import build_messages
from monitor.model.verify import CropAnswer, crop_answer_schema, crop_messages, parse_crop_answer
from monitor.redaction import redact, register_secrets

logger = logging.getLogger(__name__)

RETRY_BASE_S = 0.5
"""First retry waits up to this long (full jitter), doubling per retry."""
RETRY_CAP_S = 8.0
"""No retry waits longer than this, whatever ``Retry-After`` says."""
PROBE_TIMEOUT_S = 5.0

PIXEL_BUDGET_PRESETS: dict[str, int] = {
    "max": 1280 * 28 * 28,
    "balanced": 768 * 28 * 28,
    "economy": 512 * 28 * 28,
    "minimum": 256 * 28 * 28,
}
"""Values for ``vlm.max_pixels`` (image tokens x 28 x 28). ``max`` is the default: Qwen2.5-VL's
recommended maximum, no detail traded away. The smaller ones cost proportionally fewer image
tokens and shrink everything in the frame alike: a 100-pixel-tall person of a 1080p frame is
about 67, 52, 41 and 31 pixels tall at these presets (``bench/tokens.py`` prints the exact
figures) - trade-offs for near, large subjects, not for far-away hard hats."""

class VlmError(Exception):
    """A frame could not be analysed. ``endpoint`` names the server involved, if any."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        # The message often quotes the server's error body, which may echo the API key.
        super().__init__(redact(message))
        self.endpoint = endpoint


class VlmUnavailableError(VlmError):
    """The server could not be reached, timed out, or failed after all retries."""


class VlmRequestRejectedError(VlmError):
    """The server refused the request itself (for example an image too large for the context)."""


class VlmAnswerError(VlmError):
    """The server answered but the answer is not a usable verdict; ``raw_text`` is the
    model's text (log it truncated)."""

    def __init__(self, message: str, *, endpoint: str | None = None, raw_text: str = "") -> None:
        super().__init__(message, endpoint=endpoint)
        self.raw_text = raw_text


class VlmStaleFrameError(VlmError):
    """The frame was older than ``max_frame_age_s`` when its turn came; it was not sent."""

    def __init__(self, message: str, *, age_s: float) -> None:
        super().__init__(message)
        self.age_s = age_s


class VlmCameraBusyError(VlmError):
    """The camera already has a request in flight (one at a time per camera)."""


class _RetryableError(Exception):
    """One attempt failed in a way worth retrying (and counted against the endpoint)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Analysis:
    """A parsed answer plus what the request cost and which frame and server it was."""

    answer: Answer
    """Boxes already mapped to the original frame's pixels."""
    raw_text: str
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    endpoint: str
    image: EncodedImage
    """The image sent."""
    captured_at: float | None
    """Wall-clock capture time of the frame sent (``None``: a still image)."""
    finish_reason: str | None
    model: str
    analysed_at: float
    """Wall-clock time the answer arrived."""

    def verdict(self, camera_id: str, captured_at: float) -> Verdict:
        """The answer as camera ``camera_id``'s verdict about the frame captured at
        ``captured_at`` (wall clock)."""
        return Verdict(
            camera_id=camera_id, answer=self.answer, captured_at=captured_at,
            analysed_at=self.analysed_at, latency_s=self.latency_s, model=self.model,
            endpoint=self.endpoint, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, image=self.image)


@dataclass(frozen=True, slots=True)
class CropReply:
    """The model's answer to a focused question about a crop, and what it cost."""

    answer: CropAnswer
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(eq=False, slots=True)
class _Server:
    endpoint: Endpoint
    client: AsyncOpenAI


class VlmClient:
    """Sends frames to the model servers and returns validated verdicts."""

    def __init__(self, config: VlmConfig, *,
                 on_in_flight: Callable[[str, int], None] | None = None,
                 default_headers: Mapping[str, str] | None = None,
                 retry_base_s: float = RETRY_BASE_S, rng: random.Random | None = None) -> None:
        self._config = config
        self._retry_base_s = retry_base_s
        self._rng = rng or random.Random()
        self._servers: dict[Endpoint, _Server] = {}
        specs: list[EndpointConfig | None] = list(config.endpoints) or [None]
        for spec in specs:
            base_url = spec.base_url if spec is not None else config.base_url
            key = spec.api_key if spec is not None and spec.api_key is not None \
                else config.api_key
            capacity = (spec.max_concurrency if spec is not None and spec.max_concurrency
                        else config.max_concurrency)
            headroom = (spec.queue_headroom if spec is not None
                        and spec.queue_headroom is not None else config.queue_headroom)
            name = (spec.name if spec is not None and spec.name else redact(base_url))
            endpoint = Endpoint(name=name, capacity=capacity, headroom=headroom,
                                breaker=CircuitBreaker(threshold=config.breaker_failures,
                                                       probe_initial_s=config.breaker_probe_s))
            # A server may quote the key back in an error body: mask it wherever it goes.
            register_secrets([key.get_secret_value()])
            client = AsyncOpenAI(
                base_url=base_url, api_key=key.get_secret_value(), timeout=config.timeout_s,
                # Retries happen in this module: across endpoints, feeding the breakers.
                max_retries=0, default_headers=dict(default_headers or {}),
            )
            self._servers[endpoint] = _Server(endpoint=endpoint, client=client)
        self._pool = EndpointPool(list(self._servers), probe=self._probe,
                                  on_in_flight=on_in_flight, rng=self._rng,
                                  prioritise=config.priority_scheduling)
        self._busy: set[str] = set()
        self._response_format = {
            "type": "json_schema",
            "json_schema": {"name": "safety_answer", "schema": answer_json_schema(),
                            "strict": True},
        }
        self._crop_format = {
            "type": "json_schema",
            "json_schema": {"name": "crop_check", "schema": crop_answer_schema(),
                            "strict": True},
        }

    @property
    def endpoint(self) -> str:
        """The first server's label (no credentials: the API key travels in a header)."""
        return self._pool.endpoints[0].name

    @property
    def endpoint_names(self) -> list[str]:
        """Every server's label, in configuration order."""
        return [e.name for e in self._pool.endpoints]

    def describe(self) -> list[str]:
        """One status line per endpoint: in service with its load, or why it is out."""
        return self._pool.describe()

    def unavailable_reason(self) -> str | None:
        """Why no endpoint can take a request (every one is out of service), else ``None``."""
        return self._pool.down_reason() if self._pool.all_down else None

    def request_body(self, image: EncodedImage, *, context: str = "",
                     hazards: Sequence[Hazard] | None = None) -> dict[str, Any]:
        """The chat-completion parameters sent for ``image`` (used as is by every request)."""
        config = self._config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": build_messages(image.data_url, config.language,
                                       structured=config.structured_output,
                                       context=context, hazards=hazards),
            "max_tokens": config.max_tokens,
            "temperature": 0.0,
        }
        if config.structured_output:
            body["response_format"] = self._response_format
        return body

    def request(self, camera_id: str | None = None, *,
                urgency: Urgency | None = None) -> ModelRequest:
        """One request (through its retries), of camera ``camera_id`` or of a still image
        (``None``); enter it with ``async with`` (see the module docstring). ``urgency``
        orders it among the requests waiting for a slot (:mod:`monitor.model.priority`).

        Raises (on entering):
            VlmCameraBusyError: the camera already has a request in flight.
        """
        return ModelRequest(self, camera_id, urgency)

    async def analyse_image(self, image: EncodedImage, *, context: str = "",
                            hazards: Sequence[Hazard] | None = None, camera_id: str | None = None,
                            captured_at: float | None = None) -> Analysis:
        """Ask the model about an image already encoded (``captured_at``: wall-clock capture
        time, checked against ``max_frame_age_s`` whenever its turn comes; ``None`` for a still
        image, which never goes stale).

        Raises:
            VlmUnavailableError, VlmRequestRejectedError, VlmAnswerError, VlmStaleFrameError,
            VlmCameraBusyError
        """
        async with self.request(camera_id) as request:
            while True:
                async with request.slot() as slot:
                    return await slot.analyse(image, captured_at=captured_at, context=context,
                                              hazards=hazards)

    async def _attempt(self, server: _Server, image: EncodedImage, captured_at: float | None,
                       *, context: str, hazards: Sequence[Hazard] | None,
                       camera_id: str | None) -> Analysis:
        config = self._config
        name = server.endpoint.name
        body = self.request_body(image, context=context, hazards=hazards)
        completion, latency = await self._complete(server, body, image, camera_id)
        choice = completion.choices[0]
        text = choice.message.content or ""
        try:
            answer = parse_answer(text)
        except InvalidAnswerError as exc:
            cut = (f" (cut at max_tokens={config.max_tokens}: finish_reason length)"
                   if choice.finish_reason == "length" else "")
            raise VlmAnswerError(f"{name}: {exc}{cut}", endpoint=name,
                                 raw_text=text) from exc
        answer = answer.to_frame(image.width, image.height, image.source_width,
                                 image.source_height)
        usage = completion.usage
        return Analysis(
            answer=answer, raw_text=text, latency_s=latency,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            endpoint=name, image=image, captured_at=captured_at,
            finish_reason=choice.finish_reason, model=config.model, analysed_at=time.time(),
        )

    def crop_request_body(self, image: EncodedImage, hazard: Hazard, *,
                          max_tokens: int) -> dict[str, Any]:
        """The chat-completion parameters of a focused question about a crop
        (:mod:`monitor.model.verify`)."""
        config = self._config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": crop_messages(image.data_url, config.language, hazard),
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if config.structured_output:
            body["response_format"] = self._crop_format
        return body

    async def _check_attempt(self, server: _Server, image: EncodedImage, hazard: Hazard, *,
                             max_tokens: int, camera_id: str | None) -> CropReply:
        name = server.endpoint.name
        body = self.crop_request_body(image, hazard, max_tokens=max_tokens)
        completion, latency = await self._complete(server, body, image, camera_id)
        text = completion.choices[0].message.content or ""
        try:
            answer = parse_crop_answer(text)
        except InvalidAnswerError as exc:
            raise VlmAnswerError(f"{name}: {exc}", endpoint=name, raw_text=text) from exc
        usage = completion.usage
        return CropReply(answer=answer, latency_s=latency,
                         prompt_tokens=usage.prompt_tokens if usage else None,
                         completion_tokens=usage.completion_tokens if usage else None)

    async def _complete(self, server: _Server, body: dict[str, Any], image: EncodedImage,
                        camera_id: str | None) -> tuple[Any, float]:
        """One chat completion with its latency; failures sorted into retryable and not."""
        config = self._config
        name = server.endpoint.name
        started = time.monotonic()
        try:
            # **body: response_format is present or absent ("absent" is how a server without
            # structured output is used), so one dict serves both and ``request_body`` shows it.
            completion = await server.client.chat.completions.create(**body)
        except openai.APITimeoutError:
            raise _RetryableError(f"no answer within {config.timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            reason = exception_reason(exc.__cause__ or exc)
            raise _RetryableError(f"cannot connect ({reason})") from None
        except openai.APIStatusError as exc:
            detail = _error_message(exc)
            if exc.status_code >= 500 or exc.status_code in (408, 429):
                raise _RetryableError(f"HTTP {exc.status_code}: {detail}",
                                      _retry_after(exc)) from None
            # The server is up and answered: a refusal says nothing about its health.
            self._pool.record_success(server.endpoint)
            subject = f"camera {camera_id}'s frame" if camera_id else "the image"
            raise VlmRequestRejectedError(
                f"{name} refused the request for {subject} ({image.width}x{image.height}, "
                f"{image.tokens} image tokens, model {config.model!r}): HTTP "
                f"{exc.status_code}: {detail}{_hint(exc.status_code, detail)}",
                endpoint=name) from None
        except (openai.APIError, ValueError) as exc:
            # A 200 whose body is not a chat completion (the SDK raises the JSON decoder's
            # ValueError as it is): the server, or a proxy in front of it, answered nonsense.
            self._pool.record_success(server.endpoint)
            raise VlmAnswerError(f"{name}: unusable response: {truncate(str(exc), 200)}",
                                 endpoint=name) from None
        latency = time.monotonic() - started
        self._pool.record_success(server.endpoint)
        if not completion.choices:
            raise VlmAnswerError(f"{name}: answer without choices", endpoint=name)
        return completion, latency

    async def _probe(self, endpoint: Endpoint) -> str | None:
        """``GET /v1/models``: ``None`` when the server answers, else why not."""
        client = self._servers[endpoint].client.with_options(
            timeout=min(PROBE_TIMEOUT_S, self._config.timeout_s), max_retries=0)
        try:
            await client.models.list()
        except openai.APITimeoutError:
            return "probe timed out"
        except openai.APIConnectionError as exc:
            return f"cannot connect ({exception_reason(exc.__cause__ or exc)})"
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                return f"HTTP {exc.status_code} to GET /v1/models"
            # 401/404...: the server is up; the requests will say what is wrong with them.
        return None

    async def aclose(self) -> None:
        """Stop probing and close the HTTP connection pools."""
        await self._pool.aclose()
        for server in self._servers.values():
            await server.client.close()


class ModelRequest:
    """One request of one camera (or of a still image) through its retries; made by
    :meth:`VlmClient.request`. Entering it claims the camera (one request in flight per
    camera), leaving it frees the camera."""

    def __init__(self, client: VlmClient, camera_id: str | None,
                 urgency: Urgency | None = None) -> None:
        self._client = client
        self.camera_id = camera_id
        self.urgency = urgency
        """How its slots are ordered among the waiting requests (``None``: routine)."""
        self.attempt = 0
        """Attempts that failed in a way worth retrying so far."""
        self._retry: _RetryableError | None = None
        self._retry_endpoint = ""

    async def __aenter__(self) -> Self:
        busy = self._client._busy
        if self.camera_id is not None:
            if self.camera_id in busy:
                raise VlmCameraBusyError(f"camera {self.camera_id} already has a model request "
                                         f"in flight; one at a time")
            busy.add(self.camera_id)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.camera_id is not None:
            self._client._busy.discard(self.camera_id)

    def slot(self) -> ModelSlot:
        """A place on an endpoint for the next attempt; enter it with ``async with``. After a
        failed attempt it first waits the retry's backoff."""
        return ModelSlot(self._client, self)

    def _failed(self, failure: _RetryableError, endpoint: str) -> None:
        self._retry = failure
        self._retry_endpoint = endpoint

    async def _back_off(self) -> None:
        """Wait before the next attempt when the last one failed (else return at once)."""
        failure, self._retry = self._retry, None
        if failure is None:
            return
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads
        # the retries of many cameras hit by the same outage.
        client = self._client
        delay = min(RETRY_CAP_S, failure.retry_after_s) if failure.retry_after_s is not None \
            else backoff_s(self.attempt, client._rng, base_s=client._retry_base_s,
                           cap_s=RETRY_CAP_S)
        self.attempt += 1
        logger.debug("model request%s failed on %s (%s); retry %d/%d in %.2f s",
                     f" of camera {self.camera_id}" if self.camera_id else "",
                     self._retry_endpoint, failure.reason, self.attempt,
                     client._config.max_retries, delay)
        await asyncio.sleep(delay)


class ModelSlot:
    """One attempt: a place on one endpoint, held from entering to leaving (see the module
    docstring). Entering waits, first come first served, for a free place.

    Raises (on entering):
        VlmUnavailableError: every endpoint is out of service, or no place freed in time.
    """

    def __init__(self, client: VlmClient, request: ModelRequest) -> None:
        self._client = client
        self._request = request
        self._endpoint: Endpoint | None = None
        self._used = False

    @property
    def max_frame_age_s(self) -> float:
        """The oldest a frame may be when it is sent (``vlm.max_frame_age_s``)."""
        return self._client._config.max_frame_age_s

    @property
    def endpoint(self) -> str:
        """The name of the endpoint this slot is on."""
        if self._endpoint is None:
            raise RuntimeError("the model slot is not entered")
        return self._endpoint.name

    async def __aenter__(self) -> Self:
        await self._request._back_off()
        pool = self._client._pool
        try:
            self._endpoint = await pool.acquire(self._client._config.timeout_s,
                                                self._request.urgency)
        except NoEndpointError as exc:
            raise VlmUnavailableError(str(exc)) from exc
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        if self._endpoint is not None:
            self._client._pool.release(self._endpoint)
            self._endpoint = None
        # A failure worth retrying (and with retries left: see analyse) ends the block
        # quietly; the request's next slot backs off, then tries again.
        return isinstance(exc, _RetryableError)

    def check_age(self, captured_at: float, *, now: float) -> None:
        """Drop a frame older than ``max_frame_age_s`` at ``now`` (both wall clock).

        Raises:
            VlmStaleFrameError: it is; it must not be sent.
        """
        check_frame_age(captured_at, now=now, limit_s=self.max_frame_age_s)

    async def analyse(self, image: EncodedImage, *, captured_at: float | None = None,
                      context: str = "", hazards: Sequence[Hazard] | None = None) -> Analysis:
        """Send ``image`` (of a frame captured at ``captured_at``, wall clock; ``None``: a
        still image) on this slot's endpoint; once per slot.

        Raises:
            VlmUnavailableError (retries used up), VlmRequestRejectedError, VlmAnswerError,
            VlmStaleFrameError
        """
        if self._endpoint is None or self._used:
            raise RuntimeError("a model slot sends one request, inside its async with block")
        self._used = True
        if captured_at is not None:
            self.check_age(captured_at, now=time.time())
        client, endpoint, request = self._client, self._endpoint, self._request
        try:
            return await client._attempt(
                client._servers[endpoint], image, captured_at,
                context=context, hazards=hazards, camera_id=request.camera_id)
        except _RetryableError as failure:
            client._pool.record_failure(endpoint, failure.reason)
            attempt = request.attempt
            if attempt >= client._config.max_retries:
                retries = f" (after {attempt} retr{'y' if attempt == 1 else 'ies'})" \
                    if attempt else ""
                raise VlmUnavailableError(f"{endpoint.name}: {failure.reason}{retries}",
                                          endpoint=endpoint.name) from None
            request._failed(failure, endpoint.name)
            raise


    async def check_crop(self, image: EncodedImage, hazard: Hazard, *,
                         max_tokens: int) -> CropReply:
        """Ask the focused question about ``hazard`` for a crop (:mod:`monitor.model.verify`)
        on this slot's endpoint; once per slot, retried like :meth:`analyse`.

        Raises:
            VlmUnavailableError (retries used up), VlmRequestRejectedError, VlmAnswerError
        """
        if self._endpoint is None or self._used:
            raise RuntimeError("a model slot sends one request, inside its async with block")
        self._used = True
        client, endpoint, request = self._client, self._endpoint, self._request
        try:
            return await client._check_attempt(client._servers[endpoint], image, hazard,
                                                max_tokens=max_tokens,
                                                camera_id=request.camera_id)
        except _RetryableError as failure:
            client._pool.record_failure(endpoint, failure.reason)
            if request.attempt >= client._config.max_retries:
                raise VlmUnavailableError(f"{endpoint.name}: {failure.reason}",
                                          endpoint=endpoint.name) from None
            request._failed(failure, endpoint.name)
            raise


def check_frame_age(captured_at: float, *, now: float, limit_s: float) -> None:
    """The staleness rule: a frame captured at ``captured_at`` is not sent once it is older
    than ``limit_s`` (``vlm.max_frame_age_s``) at ``now`` (wall clock).

    Raises:
        VlmStaleFrameError: it is too old.
    """
    age = now - captured_at
    if age > limit_s:
        # No exact age in the message: the pipeline logs a message when it changes.
        raise VlmStaleFrameError(
            f"frame dropped, not sent: older than max_frame_age_s ({limit_s:g} s) when its "
            f"turn came, and no newer frame", age_s=age)


def _error_message(exc: openai.APIStatusError) -> str:
    """The server's own error text (vLLM: ``{"error": {"message": ...}}`` or ``{"message"}``)."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return truncate(str(inner["message"]), 500)
    return truncate(str(exc.message), 500)


def _hint(status: int, detail: str) -> str:
    """What to change for the refusals an operator can fix in the configuration."""
    if status == 400 and "maximum context length" in detail:
        return " (lower vlm.max_pixels or raise vLLM's --max-model-len)"
    if status == 404 and "model" in detail.lower():
        return " (vlm.model must equal vLLM's --served-model-name)"
    if status in (401, 403):
        return " (check vlm.api_key against vLLM's --api-key)"
    return ""


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """The ``Retry-After`` header in seconds, when the server sent one as a number."""
    value = exc.response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to our own backoff
    return max(0.0, seconds)
