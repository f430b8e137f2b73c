"""Webhook signatures: what the sender signs and what a receiver checks (standard library only).

``X-Segments-Signature: t=<unix seconds>,v1=<64 lowercase hex>`` where
``v1 = HMAC-SHA256(secret, "<t>.<idempotency key>.<raw body>")``. The key is
signed, so a captured request cannot be replayed under a new key; the
timestamp bounds replays of the same request. A receiver can copy this module
alone (it imports nothing from the project).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "X-Segments-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class MalformedSignature(ValueError):
    """A signature header that is not ``t=<ASCII digits>,v1=<64 lowercase hex>`` (a receiver answers 400)."""


# [0-9], not \d: on a str, \d matches every Unicode decimal digit (Arabic-Indic, fullwidth...), which int() reads.
_SIGNATURE = re.compile(r"t=([0-9]{1,12}),v1=([0-9a-f]{64})")


def _mac(secret: str, timestamp: int, idempotency_key: str, body: bytes) -> str:
    if not secret or not secret.strip():
        raise ValueError("webhook signing secret is empty or blank: refusing to sign or verify with it")
    message = f"{timestamp}.{idempotency_key}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, idempotency_key: str, timestamp: int | None = None) -> str:
    """The webhook signature header value for ``body`` sent under ``idempotency_key``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, t, idempotency_key, body)}"


def parse_signature(header: str | None) -> tuple[int, str]:
    """``(t, v1)`` of a signature header.

    Raises
    ------
    MalformedSignature
        When the header is missing or not exactly ``t=<ASCII digits>,v1=<64 hex>``
        (non-ASCII digits or letters, extra parts, upper-case hex included).
    """
    match = _SIGNATURE.fullmatch(header or "")
    if match is None:
        raise MalformedSignature(f"{SIGNATURE_HEADER} must be 't=<unix seconds>,v1=<64 lowercase hex>'")
    return int(match.group(1)), match.group(2)


def verify_signature(secret: str, body: bytes, header: str | None, idempotency_key: str,
                     tolerance_s: int = 300, now: float | None = None) -> bool:
    """Check a webhook signature (what a receiver runs).

    Returns ``False`` for a wrong MAC (other secret, body or key) or a
    timestamp more than ``tolerance_s`` away; raises :class:`MalformedSignature`
    for a header of the wrong shape and ``ValueError`` for an empty or blank secret.
    """
    t, received = parse_signature(header)
    expected = _mac(secret, t, idempotency_key, body)
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    return hmac.compare_digest(expected.encode("ascii"), received.encode("ascii"))
