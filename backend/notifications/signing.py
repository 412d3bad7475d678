"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, signed with HMAC-SHA256 under the secret's
bytes (base64 after the ``whsec_`` prefix), sent as ``webhook-signature: v1,<base64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(
    *, secret: str, msg_id: str, timestamp: int, body: bytes, previous: str = ""
) -> dict[str, str]:
    """``previous``: a secret the receiver may still verify with (a rotation's overlap),
    whose signature follows the current one's, space-separated, as the convention allows."""
    signature = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
    if previous and previous != secret:
        signature += " " + sign(secret=previous, msg_id=msg_id, timestamp=timestamp, body=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def verify(*, secret: str, msg_id: str, timestamp: int, body: bytes, signature: str) -> bool:
    """True when one of the space-separated ``v1,`` signatures matches (receivers' side;
    used by the tests)."""
    expected = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
    return any(hmac.compare_digest(expected, given) for given in signature.split(" "))
