"""The admin PIN: stored only as an scrypt hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import re

N, R, P = 2**14, 8, 1
_FORMAT = re.compile(r"^scrypt\$(\d+)\$(\d+)\$(\d+)\$([0-9a-f]{32})\$([0-9a-f]{64})$")


def hash_pin(pin: str) -> str:
    if not re.fullmatch(r"\d{4,12}", pin or ""):
        raise ValueError("the PIN must be 4 to 12 digits")
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str | None) -> bool:
    m = _FORMAT.match(stored or "")
    if not m or not pin or len(pin) > 12:
        return False
    n, r, p = (int(x) for x in m.group(1, 2, 3))
    if n > 2**20 or r > 32 or p > 16:
        return False
    digest = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(m.group(4)), n=n, r=r, p=p, dklen=32,
                            maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(digest.hex(), m.group(5))
