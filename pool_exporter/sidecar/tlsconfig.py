"""`tls_server_config` as an ssl.SSLContext: every key applied, or refused with its reason.

The names are exporter-toolkit's (Go's crypto/tls); OpenSSL, through Python's ssl module, does
the work. What Python's ssl module cannot do is refused at startup instead of being
accepted and ignored:

- `RequestClientCert` and `RequireAnyClientCert` ask for a client certificate without checking
  it against a CA. The ssl module always verifies a certificate it asks for, so these are
  refused; `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` work.
- `curve_preferences` with more than one curve: `SSLContext.set_ecdh_curve` sets one group
  (for TLS 1.2 and TLS 1.3 alike), and the ssl module has no call for a list.
- `TLS10` and `TLS11`: OpenSSL 3's default security level allows neither, so they would be
  accepted and every such handshake would fail.
- TLS 1.3 suite names in `cipher_suites`: as in Go, the TLS 1.3 suites cannot be chosen.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

KEYS = {
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

# Go's tls.CipherSuites() for TLS 1.2 (the names exporter-toolkit accepts), as OpenSSL names.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
OLD_VERSIONS = {"TLS10", "TLS11"}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = {"RequestClientCert", "RequireAnyClientCert", "RequireClientCert"}


class TlsConfigError(ValueError):
    """A tls_server_config key that cannot be applied; the message names the key."""


def context(tls: Mapping[str, Any], base: str) -> ssl.SSLContext:
    """The server context for `tls` (paths relative to `base`, as in exporter-toolkit)."""
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        raise TlsConfigError("tls_server_config needs both cert_file and key_file")
    cert, key = os.path.join(base, str(cert)), os.path.join(base, str(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(ctx, tls)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load cert_file {cert} with key_file {key}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    _client_auth(ctx, tls, base)
    # An empty list, as in exporter-toolkit, leaves OpenSSL's defaults.
    ciphers = _ciphers(tls.get("cipher_suites") or [])
    if ciphers:
        ctx.set_ciphers(":".join(ciphers))
    curves = _names(tls.get("curve_preferences") or [], "curve_preferences")
    if curves:
        ctx.set_ecdh_curve(_curve(curves))
    prefer = tls.get("prefer_server_cipher_suites", True)  # exporter-toolkit's default
    if not isinstance(prefer, bool):
        raise TlsConfigError(f"prefer_server_cipher_suites must be true or false, not {prefer!r}")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _versions(ctx: ssl.SSLContext, tls: Mapping[str, Any]) -> None:
    low = _version(tls.get("min_version", "TLS12"), "min_version")
    high = _version(tls.get("max_version", "TLS13"), "max_version")
    if low > high:
        raise TlsConfigError(
            f"min_version {tls.get('min_version')} is above max_version {tls.get('max_version')}: "
            "no handshake could succeed"
        )
    ctx.minimum_version, ctx.maximum_version = low, high


def _version(value: Any, key: str) -> ssl.TLSVersion:
    if value in OLD_VERSIONS:
        raise TlsConfigError(
            f"{key} {value} is not supported: OpenSSL's default security level allows TLS 1.2 "
            "and TLS 1.3 only (use TLS12 or TLS13)"
        )
    if value not in VERSIONS:
        raise TlsConfigError(f"{key} {value!r} is not one of {', '.join(VERSIONS)}")
    return VERSIONS[value]


def _client_auth(ctx: ssl.SSLContext, tls: Mapping[str, Any], base: str) -> None:
    auth = str(tls.get("client_auth_type") or "NoClientCert")
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise TlsConfigError(
            f"client_auth_type {auth} is not supported: it takes a client certificate without "
            "verifying it, and Python's ssl module verifies every certificate it asks for (use "
            "VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file)"
        )
    if auth not in CLIENT_AUTH:
        known = ", ".join([*CLIENT_AUTH, *sorted(UNVERIFIED_CLIENT_AUTH - {"RequireClientCert"})])
        raise TlsConfigError(f"client_auth_type {auth!r} is not one of {known}")
    ca = tls.get("client_ca_file")
    if CLIENT_AUTH[auth] == ssl.CERT_NONE:
        if ca:  # as exporter-toolkit: a CA without a policy is a mistake, not mutual TLS
            raise TlsConfigError(
                "client_ca_file is set but client_auth_type is NoClientCert: set "
                "client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            )
        return
    if not ca:
        raise TlsConfigError(f"client_auth_type {auth} needs client_ca_file")
    ctx.verify_mode = CLIENT_AUTH[auth]
    try:
        ctx.load_verify_locations(os.path.join(base, str(ca)))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load client_ca_file {ca}: {exc}") from None


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TlsConfigError(f"{key} must be a list of names")
    return list(value)


def _ciphers(value: Any) -> list[str]:
    names = _names(value, "cipher_suites")
    out = []
    for name in names:
        if name in TLS13_SUITES:
            raise TlsConfigError(
                f"cipher_suites: {name} is a TLS 1.3 suite; TLS 1.3 suites cannot be chosen "
                "(as in Go), list TLS 1.2 suites only"
            )
        if name not in CIPHER_SUITES:
            raise TlsConfigError(
                f"cipher_suites: unknown suite {name!r} (known: {', '.join(CIPHER_SUITES)})"
            )
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(CIPHER_SUITES[name])
        except ssl.SSLError:
            raise TlsConfigError(
                f"cipher_suites: {name} is not available in this OpenSSL"
            ) from None
        out.append(CIPHER_SUITES[name])
    return out


def _curve(names: list[str]) -> str:
    for name in names:
        if name not in CURVES:
            raise TlsConfigError(
                f"curve_preferences: unknown curve {name!r} (known: {', '.join(CURVES)})"
            )
    if len(names) > 1:
        raise TlsConfigError(
            f"curve_preferences: {len(names)} curves given, but Python's ssl module "
            "(set_ecdh_curve) restricts the key exchange to one curve only; give one"
        )
    return CURVES[names[0]]
