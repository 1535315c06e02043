"""Credentials out of what llmctl writes or prints: URLs and tracking URIs shown with their secrets replaced.

    redact_url("https://u:p@host/a.txt?token=abc&id=3")   # 'https://REDACTED@host/a.txt?token=REDACTED&id=3'
    redact_uri("sqlite:///runs/mlflow.db")                 # unchanged: nothing secret in it

The real value is still what a connection or download uses (`basic_auth_parts` turns its user:password@
into the Basic auth header urllib needs); only the recorded and printed copies are redacted.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, unquote, urlencode, urlparse, urlunparse

# Query parameters that carry credentials: presigned S3/GCS/Azure URLs, API tokens, session keys.
_SECRET_WORDS = ("token", "sig", "key", "secret", "pass", "pwd", "auth", "credential", "session", "policy")
REDACTED = "REDACTED"


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` safe to show or record: user:password@ and credential-like query values replaced.

    'https://u:p@host/a.txt?token=abc&id=3' -> 'https://REDACTED@host/a.txt?token=REDACTED&id=3'.
    Everything llmctl writes or prints about a URL (dataset.json, cache side files, logs, errors)
    goes through here.
    """
    try:
        parts = urlparse(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, REDACTED if _is_secret(k) else v) for k, v in pairs], safe="/:")
        return urlunparse((parts.scheme, netloc, parts.path, parts.params, query, ""))
    except ValueError:
        return "<unparsable URL>"


def has_secret(uri: str) -> bool:
    """True when `uri` holds user:password@ or a credential-like query value."""
    try:
        parts = urlparse(uri)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return True  # unparsable: assume the worst, it is shown redacted
    return "@" in parts.netloc or any(_is_secret(k) for k, _ in pairs)


def redact_uri(uri: str) -> str:
    """A tracking URI (MLflow's `http://user:pw@host`, `sqlite:///path`) safe to show or record: left
    exactly as written when it holds no credentials (redact_url would rewrite `sqlite:///x` as
    `sqlite:/x`), else redact_url's form."""
    return redact_url(uri) if has_secret(uri) else uri


def basic_auth_parts(url: str) -> tuple[str, dict[str, str]]:
    """The URL urllib can open (no user:password@) and the Basic auth header those credentials make."""
    parts = urlparse(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunparse(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}
