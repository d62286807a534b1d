"""Stream URLs with credentials: inject them only when opening, redact them everywhere else."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (the user name is kept: it helps support).

    Safe on anything: strings that are not URLs come back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:{REDACTED}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with ``username``/``password`` put into its authority, percent-encoded.

    Credentials already in the URL are kept unless explicit ones are given.
    """
    if not username:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = quote(username, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    netloc = f"{userinfo}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def url_password(url: str) -> str | None:
    """The password embedded in ``url``, if any (so it can be scrubbed from error texts)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None
