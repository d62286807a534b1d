"""One redactor for every text that leaves the process.

Logs, ``/readyz``, MQTT payloads (status, verdicts, events), command-line output and error
texts all pass through :func:`redact` on their way out. It masks

* the password of any ``scheme://user:password@host`` in the text (greedy up to the last
  ``@`` of the word: a decoded password may itself contain ``@`` or ``/``), and
* every configured secret (API keys, MQTT and camera passwords) in each form it can take in
  a text: as written, percent-encoded (as it appears inside a URL) and JSON-escaped (as it
  appears inside a payload).

Secrets are registered once per process (:func:`register_secrets`): the configuration's
secrets when the daemon or a command starts, and each model client's API keys when it is made,
so a server that quotes a key back in an error body cannot leak it through any channel.
Registering is cheap and never does I/O.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "***"

MIN_SECRET_LENGTH = 3
"""Shorter values are not masked: replacing every ``a`` of a text would hide everything and
protect nothing (such a secret is no secret)."""

_URL_USERINFO = re.compile(
    r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:@/]*:)(?P<password>\S*)@")
"""``scheme://user:password@``; the password part runs greedily to the word's last ``@``."""


class Redactor:
    """Masks URL passwords and a set of secrets; thread-safe (readers run in threads)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._forms: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` from now on (values shorter than :data:`MIN_SECRET_LENGTH` are
        ignored)."""
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets = self._secrets | new
            forms: set[str] = set()
            for secret in self._secrets:
                forms.update((secret, quote(secret, safe=""), quote(secret),
                              json.dumps(secret, ensure_ascii=False)[1:-1],
                              json.dumps(secret)[1:-1]))
            # Longest first, so a secret that contains another is masked whole.
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with URL passwords and every known secret replaced by ``***``."""
        text = _URL_USERINFO.sub(rf"\g<prefix>{REDACTED}@", text)
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def redact_payload(self, payload: bytes) -> bytes:
        """A message payload with secrets masked: text payloads only (a JPEG is left as it
        is, since rewriting its bytes would corrupt it and it holds no text)."""
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return payload
        masked = self(text)
        return payload if masked == text else masked.encode()


_PROCESS_REDACTOR = Redactor()


def register_secrets(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every text this process emits from now on."""
    _PROCESS_REDACTOR.add(secrets)


def redact(text: str) -> str:
    """``text`` as it may leave the process: URL passwords and registered secrets masked."""
    return _PROCESS_REDACTOR(text)


def redact_payload(payload: bytes) -> bytes:
    """An MQTT payload as it may leave the process (see :meth:`Redactor.redact_payload`)."""
    return _PROCESS_REDACTOR.redact_payload(payload)
