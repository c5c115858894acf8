"""HTTP basic auth against bcrypt hashes, as exporter-toolkit checks it.

- Only the first 72 bytes of a password count: bcrypt's key schedule reads no further, and
  Go's `bcrypt.CompareHashAndPassword` (which exporter-toolkit calls) compares them without
  complaint, whereas Python's bcrypt 5 raises ValueError. So a long password works here
  exactly as it does with node_exporter.
- Every check that is not answered from the cache costs the same: one bcrypt computation per
  distinct cost among the configured hashes, against the user's own hash at its cost and a
  dummy hash at each other cost (all of them for an unknown user). Neither an unknown user
  nor a user with a cheaper hash answers sooner.
- One bcrypt computation at a time, as in exporter-toolkit, so a flood of wrong passwords
  takes one core, not all of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading

MAX_PASSWORD_BYTES = 72
_CACHE_SIZE = 64


def cost(hashed: bytes) -> int:
    """The cost factor of a `$2y$10$...` hash."""
    return int(hashed.split(b"$")[2])


def credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` header; the scheme is matched
    without regard to case (RFC 7617), the rest as Go's `Request.BasicAuth` reads it."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        return None
    user, colon, password = raw.partition(b":")
    if not colon:
        return None
    # A name that is not UTF-8 matches no configured user, and still pays the full cost.
    return user.decode("utf-8", "surrogateescape"), password


class BasicAuth:
    """Users and their bcrypt hashes; `check(header)` tells whether a request may pass."""

    def __init__(self, users: dict[str, bytes]) -> None:
        import bcrypt  # the `sidecar` extra; imported here so that `sidecar --help` needs none

        self.users = dict(users)
        self._dummies = {
            c: bcrypt.hashpw(b"pool-exporter: no such user", bcrypt.gensalt(rounds=c))
            for c in sorted({cost(h) for h in self.users.values()})
        }
        self._verified: set[bytes] = set()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        found = credentials(header)
        if found is None:
            return False
        user, password = found
        hashed = self.users.get(user)
        # bcrypt costs tens of milliseconds by design; a scrape every few seconds would pay it
        # each time, so a verified pair is remembered (as a digest, not the password).
        key = hashlib.sha256(user.encode("utf-8", "surrogateescape") + b"\0" + password).digest()
        with self._cache_lock:
            if hashed is not None and key in self._verified:
                return True
        ok = self._verify(password[:MAX_PASSWORD_BYTES], hashed)
        if ok:
            with self._cache_lock:
                if len(self._verified) >= _CACHE_SIZE:
                    self._verified.clear()
                self._verified.add(key)
        return ok

    def _verify(self, password: bytes, hashed: bytes | None) -> bool:
        own = cost(hashed) if hashed is not None else None
        ok = False
        with self._bcrypt_lock:
            for c, dummy in self._dummies.items():
                against = hashed if c == own and hashed is not None else dummy
                if _matches(password, against) and against is hashed:
                    ok = True
        return ok


def _matches(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # loaded by BasicAuth() already: a dict lookup

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a hash bcrypt cannot read; checked at startup, so never expected
        return False
