"""`--web.config.file`: TLS and basic auth in the format Prometheus exporters share.

The format of prometheus/exporter-toolkit:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                 # optional, with client_auth_type
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      alice: $2y$10$...                      # bcrypt hash (htpasswd -nBC 10 alice)

Unknown keys are an error, as in exporter-toolkit: a misspelt `basic_auth_user` must not
silently leave the endpoint open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_TOP = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS = {
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
}
_HTTP = {"http2", "headers"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class WebConfigError(ValueError):
    """The web config file cannot be used; the message names the file and the problem."""


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header passes basic auth (always, without users)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # bcrypt costs tens of milliseconds by design; a scrape every few seconds would pay it
        # each time, so a verified pair is remembered (as a digest, not the password).
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if hashed is not None and key in self._verified:
                return True
        import bcrypt

        # An unknown user costs the same as a wrong password, so names cannot be probed.
        against = hashed if hashed is not None else next(iter(self.users.values()))
        ok = bool(bcrypt.checkpw(password.encode(), against)) and hashed is not None
        if ok:
            with self._lock:
                if len(self._verified) > 64:
                    self._verified.clear()
                self._verified.add(key)
        return ok


def load(path: str | None) -> WebConfig:
    """The parsed file, or an empty config (plain HTTP, no auth) without one."""
    if not path:
        return WebConfig()
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as exc:
        raise WebConfigError(f"cannot read web config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"web config file {path} is not valid YAML: {_first(exc)}") from None
    if raw is None:
        return WebConfig()
    section = _mapping(raw, path, "the file", _TOP)
    base = os.path.dirname(os.path.abspath(path))
    config = WebConfig()
    if "tls_server_config" in section:
        tls = _mapping(section["tls_server_config"], path, "tls_server_config", _TLS)
        config.ssl_context = _ssl_context(tls, path, base)
    if "basic_auth_users" in section:
        users = _mapping(section["basic_auth_users"], path, "basic_auth_users", None)
        for user, hashed in users.items():
            if not _is_bcrypt(hashed):
                raise WebConfigError(
                    f"web config file {path}: basic_auth_users.{user} must be a bcrypt hash "
                    "(htpasswd -nBC 10 USER)"
                )
            config.users[str(user)] = hashed.encode()
    if "http_server_config" in section:
        http = _mapping(section["http_server_config"], path, "http_server_config", _HTTP)
        headers = _mapping(http.get("headers") or {}, path, "http_server_config.headers", None)
        config.headers = {str(k): str(v) for k, v in headers.items()}
    return config


def _is_bcrypt(value: Any) -> bool:
    import bcrypt

    if not isinstance(value, str) or not value.startswith(("$2a$", "$2b$", "$2y$")):
        return False
    try:  # a truncated hash would fail at the first scrape instead
        bcrypt.checkpw(b"", value.encode())
    except ValueError:
        return False
    return True


def _mapping(value: Any, path: str, where: str, allowed: set[str] | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WebConfigError(f"web config file {path}: {where} must be a mapping")
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise WebConfigError(
                f"web config file {path}: unknown key {unknown[0]!r} in {where} "
                f"(known: {', '.join(sorted(allowed))})"
            )
    return value


def _ssl_context(tls: Mapping[str, Any], path: str, base: str) -> ssl.SSLContext:
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        raise WebConfigError(
            f"web config file {path}: tls_server_config needs both cert_file and key_file"
        )
    # Relative paths are relative to the config file, as in exporter-toolkit.
    cert, key = os.path.join(base, str(cert)), os.path.join(base, str(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _version(tls.get("min_version", "TLS12"), path, "min_version")
    if "max_version" in tls:
        context.maximum_version = _version(tls["max_version"], path, "max_version")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"web config file {path}: cannot load cert_file {cert} with key_file {key}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    auth = str(tls.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"web config file {path}: client_auth_type {auth!r} is not one of "
            f"{', '.join(_CLIENT_AUTH)}"
        )
    context.verify_mode = _CLIENT_AUTH[auth]
    ca = tls.get("client_ca_file")
    if ca:
        try:
            context.load_verify_locations(os.path.join(base, str(ca)))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"web config file {path}: cannot load client_ca_file {ca}: {exc}"
            ) from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(
            f"web config file {path}: client_auth_type {auth} needs client_ca_file"
        )
    return context


def _version(value: Any, path: str, key: str) -> ssl.TLSVersion:
    if value not in _VERSIONS:
        raise WebConfigError(
            f"web config file {path}: {key} {value!r} is not one of {', '.join(_VERSIONS)}"
        )
    return _VERSIONS[value]


def _first(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
