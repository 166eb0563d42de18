"""Keyed pseudonymisation of PII columns: HMAC-SHA-256 computed with Spark built-ins (no Python UDF).

HMAC(K, m) = SHA256((K' xor opad) || SHA256((K' xor ipad) || m)) with K' the key padded to the
64-byte block (RFC 2104); the two padded keys are computed once on the driver and enter the plan as
binary literals, so executors hash in the JVM at full speed. The same key gives the same token on
every run, which is what makes tokens joinable across tables and reruns.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from lakeml.errors import ConfigError

_BLOCK = 64
MIN_KEY_BYTES = 16
# A card number as it may appear anywhere in a raw line: 13-19 digits in a row, or 16 in groups of
# four ("4532 0112 3456 7890", "4532-0112-...") or 15 as 4-6-5 (Amex), one separator throughout; not
# part of a longer word, a decimal number or a dash-joined id (a UUID's all-digit groups).
PAN_SPAN = (
    r"(?<![0-9A-Za-z.\-])"
    r"(?:[0-9]{13,19}|[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}|[0-9]{4}([ -])[0-9]{6}\2[0-9]{5})"
    r"(?![0-9A-Za-z]|[.\-][0-9])"
)
# What a PAN becomes at load: pan:<HMAC-SHA-256 of its digits>:<digit count>:<last 4>. The token is
# the one silver stores as card_token (same key), so tables stay joinable on it.
PAN_TOKEN_PATTERN = r"^pan:([0-9a-f]{64}):([0-9]{2}):([0-9]{4})$"


def pii_key(variable: str, key_file: str, lakehouse_root: str) -> bytes:
    """The HMAC key: environment variable ``variable``, else the file ``key_file`` (owner-only, outside the
    lake)."""
    if os.environ.get(variable):
        return pii_key_from_env(variable)
    path = Path(key_file).expanduser().absolute() if key_file else None
    if path is None or not path.is_file():
        where = (
            f"nor is there a key file at {path} (silver.pii_key_file)" if path else "and no key file is set"
        )
        raise ConfigError(
            f"environment variable {variable} (silver.pii_key_env) is not set, {where}: one of them must "
            "hold the secret key for PII tokens; there is no default key"
        )
    root = Path(lakehouse_root.removeprefix("file:")).expanduser().absolute()
    if path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(
            f"PII key file {path} is inside the lakehouse {root}: a copy of the lake would carry its key; "
            "keep the key in your config folder (silver.pii_key_file) or in the environment"
        )
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"PII key file {path} is readable by others (mode {stat.filemode(mode)}): chmod 600 it"
        )
    return _checked_key(path.read_text().strip().encode("utf-8"), f"key file {path}")


def pii_key_from_env(variable: str) -> bytes:
    """The HMAC key from environment variable ``variable``; a missing or short key is a ConfigError."""
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigError(
            f"environment variable {variable} (silver.pii_key_env) is not set: it must hold the secret "
            "key for PII tokens; there is no default key"
        )
    return _checked_key(value.encode("utf-8"), f"environment variable {variable}")


def _checked_key(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{source} holds a {len(key)}-byte key; PII tokens need at least {MIN_KEY_BYTES}")
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


def pan_token(digits: Column, key: bytes) -> Column:
    """pan:<HMAC of the digits>:<digit count>:<last 4> for a string of PAN digits."""
    count = F.lpad(F.length(digits).cast("string"), 2, "0")
    return F.concat_ws(":", F.lit("pan"), hmac_sha256_hex(digits, key), count, last_digits(digits))


def mask_pans(text: Column, key: bytes) -> Column:
    """Every Luhn-valid PAN-like span of ``text`` replaced by its ``pan_token`` (idempotent; NULL stays
    NULL)."""

    def replace_span(masked: Column, span: Column) -> Column:
        digits = F.regexp_replace(span, "[ -]", "")
        valid = F.call_function("luhn_check", digits)
        return F.when(valid, F.replace(masked, span, pan_token(digits, key))).otherwise(masked)

    return F.aggregate(F.regexp_extract_all(text, F.lit(PAN_SPAN), 0), text, replace_span)


def mask_pans_in_bytes(data: Column, key: bytes) -> Column:
    """``mask_pans`` over bytes of any encoding: read as ISO-8859-1, so every other byte is kept as it was."""
    return F.encode(mask_pans(F.decode(data, "ISO-8859-1"), key), "ISO-8859-1")
