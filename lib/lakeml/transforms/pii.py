"""Keyed pseudonymisation of PII columns: HMAC-SHA-256 computed with Spark built-ins (no Python UDF).

HMAC(K, m) = SHA256((K' xor opad) || SHA256((K' xor ipad) || m)) with K' the key padded to the
64-byte block (RFC 2104); the two padded keys are computed once on the driver and enter the plan as
binary literals, so executors hash in the JVM at full speed. The same key gives the same token on
every run, which is what makes tokens joinable across tables and reruns.
"""

from __future__ import annotations

import hashlib
import os

from pyspark.sql import Column
from pyspark.sql import functions as F

from lakeml.errors import ConfigError

_BLOCK = 64
MIN_KEY_BYTES = 16


def pii_key_from_env(variable: str) -> bytes:
    """The HMAC key from environment variable ``variable``; a missing or short key is a ConfigError."""
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigError(
            f"environment variable {variable} (silver.pii_key_env) is not set: it must hold the secret "
            "key for PII tokens; there is no default key"
        )
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"environment variable {variable} holds a {len(key)}-byte key; PII tokens need at least {MIN_KEY_BYTES}"
        )
    return key


def hmac_sha256_hex(message: Column, key: bytes) -> Column:
    """Lower-case hex HMAC-SHA-256 of the message's UTF-8 bytes under ``key``; NULL stays NULL."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    inner_key = bytes(b ^ 0x36 for b in padded)
    outer_key = bytes(b ^ 0x5C for b in padded)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_key), message.cast("binary")), 256))
    return F.when(message.isNotNull(), F.sha2(F.concat(F.lit(outer_key), inner), 256))


def last_digits(text: Column, count: int = 4) -> Column:
    """The last ``count`` characters, for display next to a token (e.g. card ending 7890)."""
    return F.substring(text, -count, count)
