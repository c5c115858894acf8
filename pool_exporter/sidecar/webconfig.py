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
silently leave the endpoint open. A key that is known but cannot be applied is an error too
(tlsconfig.py says which and why).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .basicauth import BasicAuth
from .tlsconfig import KEYS as TLS_KEYS
from .tlsconfig import TlsConfigError, context

_TOP = {"tls_server_config", "basic_auth_users", "http_server_config"}
_HTTP = {"http2", "headers"}
# exporter-toolkit's list: the headers it lets a web config set, and their allowed values
_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}


class WebConfigError(ValueError):
    """The web config file cannot be used; the message names the file and the problem."""


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header passes basic auth (always, without users)."""
        return self.auth is None or self.auth.check(header)


def load(path: str | None) -> WebConfig:
    """The parsed file, or an empty config (plain HTTP, no auth) without one."""
    if not path:
        return WebConfig()
    import yaml

    try:
        with open(path, "rb") as f:
            raw = yaml.safe_load(f.read().decode("utf-8"))
    except OSError as exc:
        raise WebConfigError(f"cannot read web config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise WebConfigError(
            f"web config file {path} is not UTF-8 text (byte {exc.start})"
        ) from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"web config file {path} is not valid YAML: {_first(exc)}") from None
    if raw is None:
        return WebConfig()
    section = _mapping(raw, path, "the file", _TOP)
    base = os.path.dirname(os.path.abspath(path))
    config = WebConfig()
    if "tls_server_config" in section:
        tls = _mapping(section["tls_server_config"], path, "tls_server_config", TLS_KEYS)
        try:
            config.ssl_context = context(tls, base)
        except TlsConfigError as exc:
            raise WebConfigError(f"web config file {path}: {exc}") from None
    if "basic_auth_users" in section:
        users = _mapping(section["basic_auth_users"], path, "basic_auth_users", None)
        hashes = {}
        for user, hashed in users.items():
            if not _is_bcrypt(hashed):
                raise WebConfigError(
                    f"web config file {path}: basic_auth_users.{user} must be a bcrypt hash "
                    "(htpasswd -nBC 10 USER)"
                )
            hashes[str(user)] = hashed.encode()
        if hashes:
            config.auth = BasicAuth(hashes)
    if "http_server_config" in section:
        http = _mapping(section["http_server_config"], path, "http_server_config", _HTTP)
        if http.get("http2", False) is not False:
            raise WebConfigError(
                f"web config file {path}: http_server_config.http2 is not supported: the sidecar "
                "serves HTTP/1.1 only (remove the key or set it to false)"
            )
        headers = _mapping(http.get("headers") or {}, path, "http_server_config.headers", None)
        config.headers = _headers(headers, path)
    return config


def _headers(headers: Mapping[str, Any], path: str) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        allowed = _HEADERS.get(str(name))
        if allowed is None:
            raise WebConfigError(
                f"web config file {path}: header {name!r} cannot be configured "
                f"(known: {', '.join(_HEADERS)})"
            )
        if allowed and value not in allowed:
            raise WebConfigError(
                f"web config file {path}: header {name} must be one of {', '.join(allowed)}"
            )
        out[str(name)] = str(value)
    return out


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


def _first(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
