"""Client identity at the gateway: one normalisation, used for the request header, blocks, rate limits and
decision-log queries alike, so that what is blocked is what is matched.

:func:`normalise_client_id` — the one function:

* decoded as **UTF-8** (HTTP header values arrive as bytes; Starlette hands them over latin-1 decoded, which
  :func:`client_id_from_header` undoes), surrounding whitespace stripped, Unicode **NFC**, then
  **case-folded** (``Mallory``, ``mallory `` and ``MALLORY`` are one client; so are the composed and
  decomposed spellings of ``zoë``);
* **bounded**: 1-128 characters (and at most 512 bytes of UTF-8) after normalisation; letters and digits of
  any script, plus ``. _ - : @ / +`` — and it must *start* with a letter or digit, so no id can begin a
  spreadsheet formula (``= + - @``) or carry a control or invisible formatting character;
* anything else is :class:`InvalidClientId` (the gateway answers 400 ``bad_client_id`` naming the rule).

A request without the header is ``anonymous``.

**Rate-limit policy for self-asserted ids.** Client ids are whatever the client sends (until API keys),
so a limit on one id is passed by sending another. Hence: a rate limit on ``anonymous`` is a *shared*
bucket for every request whose client id has no rate limit of its own — random or new ids land in it
with the requests that send none (:func:`rate_limit_key`). To exempt a well-behaved client, give it its
own limit. Blocks stay exact (on the normalised id): a blocked client that changes its id is no longer
"that client" — contain it with a rate limit on ``anonymous``, a quarantine, or API keys.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

MAX_CLIENT_ID = 128
MAX_CLIENT_ID_BYTES = 512
ANONYMOUS = "anonymous"
_PUNCT = frozenset("._-:@/+")
RULE = (f"1-{MAX_CLIENT_ID} letters, digits or . _ - : @ / + (starting with a letter or digit), UTF-8; "
        "case and surrounding spaces are ignored")


class InvalidClientId(ValueError):
    """A client id outside the rule; ``str()`` says why."""


def _ok_char(ch: str) -> bool:
    if ch in _PUNCT:
        return True
    cat = unicodedata.category(ch)
    return cat[0] in "LN" or cat in ("Mn", "Mc")  # letters, digits, combining marks (after NFC)


def normalise_client_id(value: str | bytes | None) -> str:
    """The canonical form of a client id (see the module doc), or :class:`InvalidClientId`."""
    if value is None:
        return ANONYMOUS
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidClientId("not valid UTF-8") from None
    if not isinstance(value, str):
        raise InvalidClientId(f"expected text, got {type(value).__name__}")
    if len(value) > 4 * MAX_CLIENT_ID:  # bound the work before normalising
        raise InvalidClientId(f"longer than {MAX_CLIENT_ID} characters")
    cid = unicodedata.normalize("NFC", unicodedata.normalize("NFC", value.strip()).casefold())
    if not cid:
        raise InvalidClientId("empty")
    if len(cid) > MAX_CLIENT_ID or len(cid.encode("utf-8")) > MAX_CLIENT_ID_BYTES:
        raise InvalidClientId(f"longer than {MAX_CLIENT_ID} characters")
    bad = next((ch for ch in cid if not _ok_char(ch)), None)
    if bad is not None:
        raise InvalidClientId(f"character {bad!r} (U+{ord(bad):04X}) is not allowed")
    if cid[0] in _PUNCT:
        raise InvalidClientId(f"must start with a letter or digit, not {cid[0]!r}")
    return cid


def client_id_from_header(header_value: str | None) -> str:
    """The normalised id from an ``X-Client-Id`` value as Starlette/ASGI servers hand it over (the raw bytes
    decoded as latin-1): re-encoded to its bytes and decoded as UTF-8. Missing or blank → ``anonymous``."""
    if header_value is None or not header_value.strip():
        return ANONYMOUS
    try:
        raw = header_value.encode("latin-1")
    except UnicodeEncodeError:  # already decoded text (not from an ASGI header)
        return normalise_client_id(header_value)
    return normalise_client_id(raw)


def is_valid_client_id(value: object) -> bool:
    try:
        normalise_client_id(value)  # type: ignore[arg-type]
    except InvalidClientId:
        return False
    return value is not None


def rate_limit_key(client: str, rate_limits: Mapping[str, float]) -> tuple[str, float] | None:
    """(bucket, rate) that applies to normalised ``client``: its own limit, else the shared ``anonymous``
    bucket when ``anonymous`` is limited (see the module doc), else None."""
    rate = rate_limits.get(client)
    if rate is not None:
        return client, rate
    rate = rate_limits.get(ANONYMOUS)
    if rate is not None:
        return ANONYMOUS, rate
    return None
