"""Keep passwords, keys and tokens out of reprs, log lines, exception messages and stats.

Connectors build their ``description`` with the ``mask_*`` helpers, and pass every exception message they re-raise
through ``redact`` (or ``scrub_exception``) with the secret values they know of, because client libraries
sometimes echo what they were given (libpq quotes pieces of a malformed conninfo, for instance).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = [
    "MASK",
    "conninfo_secrets",
    "describe_failure",
    "is_secret_key",
    "mapping_secrets",
    "mask_conninfo",
    "mask_mapping",
    "mask_url",
    "redact",
    "scrub_exception",
    "url_secrets",
]

#: What a masked value is replaced with.
MASK = "***"

# Substrings of a key name that mark its value as secret ("password", "sslpassword", "aws_secret_access_key",
# "aws_session_token", "api_key", "oauth_client_secret"...), plus whole names that do not contain one of them.
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "credential",
    "private_key",
)
_SECRET_KEYS = frozenset({"pwd", "http_auth", "basic_auth", "bearer_auth", "authorization", "auth"})
# Keys whose value is a ``(user, password)`` or ``(id, key)`` pair: only the second item is secret.
_PAIR_KEYS = frozenset({"http_auth", "basic_auth", "api_key"})

# One ``key = value`` item of a libpq conninfo string; a value is either single-quoted (with backslash escapes)
# or runs to the next whitespace.
_CONNINFO_ITEM = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*(?:'|\\?$)|[^\s']*)"""
)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# libpq ends a URI's user info at the first "@" before any "/", so for it "postgresql://app:p#ss@db/x" has the
# password "p#ss", where urlsplit() (RFC 3986) sees a host "app", a port "p" and a fragment.
_LIBPQ_SCHEMES = frozenset({"postgresql", "postgres"})


def is_secret_key(key: str) -> bool:
    """Return True if a parameter named ``key`` holds a secret (password, secret key, token, API key...)."""
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(part in lowered for part in _SECRET_KEY_PARTS)


def mask_url(url: str) -> str:
    """Return ``url`` with the password of its user info and its secret query parameters masked.

    ``postgresql://app:hunter2@db:5432/x?sslpassword=y`` becomes ``postgresql://app:***@db:5432/x?sslpassword=***``.
    A string that is not a URL is returned unchanged.
    """
    if not _URL_SCHEME.match(url):
        return url
    span = _password_span(url)
    if span is not None:  # masked in place first, in case urlsplit() below reads the user info differently
        url = url[: span[0]] + MASK + url[span[1] :]
    try:
        parts = urlsplit(url)
    except ValueError:
        # A URL so malformed that it cannot be split may still hold a secret: show only its scheme.
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(key) for key, _ in pairs):
            query = urlencode(
                [(key, MASK if is_secret_key(key) else value) for key, value in pairs], safe="*"
            )
    # Rebuilt by hand: urlunsplit() would turn "postgresql:///db" (empty host) into "postgresql:/db".
    masked = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        masked += f"?{query}"
    if parts.fragment:
        masked += f"#{parts.fragment}"
    return masked


def _netloc_end(url: str, start: int) -> int:
    """Return where the network location that begins at ``start`` ends: at the first "/", "?" or "#"."""
    return min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))


def _password_span(url: str) -> tuple[int, int] | None:
    """Return where the user-info password of ``url`` (a URL with a scheme) starts and ends; None if it has none.

    Found by hand rather than with urlsplit(), which raises ValueError on a malformed host (a typo such as
    ``postgresql://app:pw@[::1/x``) that a client may then echo whole in its error message. The user info is what
    precedes the last "@" of the network location, which ends at the first "/", "?" or "#" (as for urlsplit()), or,
    for libpq's schemes, at the first "@" before any "/" when a "?" or "#" comes first (see ``_LIBPQ_SCHEMES``).
    """
    start = url.index("://") + 3
    at = url.rfind("@", start, _netloc_end(url, start))
    if at < 0 and url[: start - 3].lower() in _LIBPQ_SCHEMES:
        slash = url.find("/", start)
        at = url.find("@", start, len(url) if slash < 0 else slash)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    return None if colon < 0 else (colon + 1, at)


def _url_query(url: str) -> str:
    """Return the query of ``url`` as urlsplit() finds it, also when urlsplit() rejects the URL."""
    try:
        return urlsplit(url).query
    except ValueError:
        # Split by urlsplit()'s own rules: the network location ends at "/", "?" or "#"; the fragment goes first.
        return url[_netloc_end(url, url.index("://") + 3) :].partition("#")[0].partition("?")[2]


def url_secrets(url: str) -> list[str]:
    """Return the secret values found in ``url``: its user-info password and secret query parameters.

    A URL too malformed for urlsplit() still yields them: the client it is meant for may echo it in an error.
    """
    if not _URL_SCHEME.match(url):
        return []
    found: list[str] = []
    span = _password_span(url)
    if span is not None:
        raw = url[span[0] : span[1]]
        found.extend((raw, unquote(raw)))
    for key, value in parse_qsl(_url_query(url), keep_blank_values=True):
        if is_secret_key(key):
            found.append(value)
            found.append(quote(value, safe=""))
    return [secret for secret in found if secret]


def _unquote_conninfo_value(value: str) -> str:
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def mask_conninfo(conninfo: str) -> str:
    """Return a libpq connection string with its secrets masked.

    Handles both forms libpq accepts: ``key=value`` pairs (quoted values included, e.g. ``password='a b\\'c'``) and
    ``postgresql://user:password@host/db?password=...`` URLs.
    """
    if _URL_SCHEME.match(conninfo.strip()):
        return mask_url(conninfo.strip())

    def replace(match: re.Match[str]) -> str:
        if is_secret_key(match.group("key")):
            return f"{match.group('key')}={MASK}"
        return match.group(0)

    # An unterminated quoted value runs to the end of the string, so it is masked whole rather than leaked.
    return _CONNINFO_ITEM.sub(replace, conninfo)


def conninfo_secrets(conninfo: str) -> list[str]:
    """Return the secret values found in a libpq connection string (either form)."""
    stripped = conninfo.strip()
    if _URL_SCHEME.match(stripped):
        return url_secrets(stripped)
    found: list[str] = []
    for match in _CONNINFO_ITEM.finditer(conninfo):
        if is_secret_key(match.group("key")):
            raw = match.group("value")
            found.extend((raw, _unquote_conninfo_value(raw)))
    return [secret for secret in found if secret and secret != "''"]


def _mask_value(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return mask_mapping(value)
    if is_secret_key(key):
        if key.lower() in _PAIR_KEYS and isinstance(value, (tuple, list)) and len(value) == 2:
            return (value[0], MASK)
        if value is None:
            return None
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, (list, tuple)):
        return type(value)(mask_url(item) if isinstance(item, str) else item for item in value)
    return value


def mask_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``mapping`` fit for a log line: secret values replaced by ``***``.

    Secret keys are those named like a password, secret, token or API key (``aws_secret_access_key``,
    ``aws_session_token``, ``api_key``...); ``http_auth``/``basic_auth``/``api_key`` pairs keep their first item (the
    user or key id). URLs among the other values have their passwords masked; nested mappings are masked too.
    """
    return {key: _mask_value(str(key), value) for key, value in mapping.items()}


def mapping_secrets(mapping: Mapping[str, Any]) -> list[str]:
    """Return the secret values held in ``mapping`` (and in the URLs it holds), for ``redact``.

    Basic-auth pairs and API keys also yield their base64 ``Authorization`` header forms, which some clients show.
    """
    found: list[str] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            found.extend(mapping_secrets(value))
        elif is_secret_key(str(key)):
            if isinstance(value, (tuple, list)) and len(value) == 2:
                first, second = (str(item) for item in value)
                found.append(second)
                found.append(base64.b64encode(f"{first}:{second}".encode()).decode())
            elif isinstance(value, (str, bytes)):
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                found.append(text)
            elif value is not None and not callable(value):
                found.append(str(value))
        elif isinstance(value, str):
            found.extend(url_secrets(value))
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str):
                    found.extend(url_secrets(item))
                elif isinstance(item, Mapping):
                    found.extend(mapping_secrets(item))
    return [secret for secret in found if secret]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each known secret value in ``text`` by ``***``.

    The longest secrets are replaced first so that a secret containing another is not left half-masked.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_exception(error: BaseException, secrets: Iterable[str | None]) -> BaseException:
    """Redact ``secrets`` from the message of ``error`` and of the exceptions chained to it, in place.

    Also drops the failed libpq connection a psycopg error carries (``pgconn``), whose repr lists the password.
    Returns ``error`` so that it can be re-raised with its type, traceback and chain unchanged.
    """
    known = [s for s in secrets if s]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if known:
            current.args = tuple(redact(arg, known) if isinstance(arg, str) else arg for arg in current.args)
            for attribute in ("message", "msg"):
                value = getattr(current, attribute, None)
                if isinstance(value, str):
                    try:
                        setattr(current, attribute, redact(value, known))
                    except (AttributeError, TypeError):
                        pass
        if getattr(current, "_pgconn", None) is not None:
            try:
                current._pgconn = None  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
        current = current.__cause__ or current.__context__
    return error


# A URL anywhere in a message; its password and secret query parameters are masked by mask_url().
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# "key=value", "key: value", "'key': 'value'": the value is masked when the key names a secret. An
# ``Authorization: Bearer <token>``-style value keeps its scheme word and loses the token.
_KEY_VALUE_IN_TEXT = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_-]*)(?P<sep>['"]?\s*[=:]\s*)"""
    r"""(?P<scheme>(?:Bearer|Basic|Token|ApiKey)\s+)?(?P<value>'(?:[^'\\]|\\.)*'?|"[^"]*"?|[^\s,;)}\]]+)""",
    re.IGNORECASE,
)
_MESSAGE_LIMIT = 200


def describe_failure(error: BaseException) -> str:
    """``module.Type: first line of the message``, shortened, with what looks like a secret masked.

    For errors raised by the caller's code (a batch's ``fn``), which carry no promise the connectors make (that they
    never echo a password): such a description ends up in logs and alerts, so passwords in URLs and
    ``password=...``-style pairs are masked, and an ``Authorization: Bearer <token>``-style value loses its token.
    """
    cls = type(error)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return name
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), lines[0])

    def mask(match: re.Match[str]) -> str:
        if not is_secret_key(match.group("key")):
            return match.group(0)
        return f"{match.group('key')}{match.group('sep')}{match.group('scheme') or ''}{MASK}"

    text = _KEY_VALUE_IN_TEXT.sub(mask, text)
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return f"{name}: {text}"
