"""The sidecar against hostile clients and careless configuration: a real process each time."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from .support.cli import run
from .support.procs import Procs, Sidecar, parse, procs, start_sidecar
from .support.tls import self_signed

__all__ = ["procs"]

# A real user's password longer than bcrypt's 72 bytes; only its first 72 bytes count.
LONG = ("correct-horse-battery-staple-" * 4)[:100]


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def hashed(password: str | bytes, rounds: int) -> str:
    raw = password.encode() if isinstance(password, str) else password
    return bcrypt.hashpw(raw[:72], bcrypt.gensalt(rounds=rounds)).decode()


def basic(user: str, password: str | bytes, scheme: str = "Basic") -> dict[str, str]:
    raw = password.encode() if isinstance(password, str) else password
    token = base64.b64encode(user.encode() + b":" + raw).decode()
    return {"Authorization": f"{scheme} {token}"}


@pytest.fixture
def guarded(tmp_path: Path, procs: Procs) -> Sidecar:
    """A sidecar with two users whose hashes differ in cost: 4 (about 1 ms) and 11."""
    config = write_config(
        tmp_path,
        {"basic_auth_users": {"cheap": hashed(LONG, 4), "dear": hashed("dear-password", 11)}},
    )
    return start_sidecar(procs, tmp_path, f"--web.config.file={config}")


def status(sidecar: Sidecar, headers: dict[str, str], path: str = "/metrics") -> int:
    return sidecar.client.get(sidecar.url + path, headers=headers).status_code


def test_a_password_over_72_bytes_is_a_401_and_a_real_users_works_as_in_exporter_toolkit(
    guarded: Sidecar,
) -> None:
    flood = "x" * 100
    assert status(guarded, basic("nobody", flood)) == 401
    assert status(guarded, basic("dear", flood)) == 401
    # Go's bcrypt compares the first 72 bytes: the whole password and its 72-byte prefix pass.
    assert status(guarded, basic("cheap", LONG)) == 200
    assert status(guarded, basic("cheap", LONG[:72] + "anything after byte 72")) == 200
    assert status(guarded, basic("cheap", LONG[:71])) == 401
    log = guarded.proc.output()
    assert "Traceback" not in log
    assert "72 bytes" not in log


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("cheap", "wrong"),
        basic("nobody", LONG),
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no colon at all").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
        basic("cheap", LONG[:10] + "\0" + LONG[11:]),
        basic("cheap\0", LONG),
        basic("cheap", LONG, scheme="Bearer"),
        {"Authorization": "Basic"},
    ],
    ids=[
        "missing", "wrong", "unknown user", "bad base64", "no colon", "not UTF-8",
        "NUL in password", "NUL in user", "other scheme", "empty",
    ],
)  # fmt: skip
def test_bad_credentials_of_every_kind_get_401_without_a_traceback(
    guarded: Sidecar, headers: dict[str, str]
) -> None:
    response = guarded.client.get(guarded.url + "/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "Traceback" not in guarded.proc.output()


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"])
def test_the_basic_scheme_is_matched_without_regard_to_case(guarded: Sidecar, scheme: str) -> None:
    assert status(guarded, basic("cheap", LONG, scheme=scheme)) == 200


def failed_attempt_seconds(sidecar: Sidecar, user: str) -> float:
    """The quickest of a few failed attempts: the floor is the work done, not the noise of
    a shared machine."""
    times = []
    for n in range(5):
        t0 = time.perf_counter()
        assert status(sidecar, basic(user, f"wrong-{n}")) == 401
        times.append(time.perf_counter() - t0)
    return min(times)


def test_a_failed_attempt_costs_the_same_for_an_unknown_user_and_for_any_known_one(
    guarded: Sidecar,
) -> None:
    # Before: an unknown user was checked against the first user's cost-4 hash (about 1 ms)
    # while a wrong password for the cost-11 user took about a hundred times longer.
    dear = failed_attempt_seconds(guarded, "dear")
    for user in ("nobody", "cheap"):
        assert failed_attempt_seconds(guarded, user) > dear / 2, user


def test_head_answers_like_get_without_a_body(tmp_path: Path, procs: Procs) -> None:
    sidecar = start_sidecar(procs, tmp_path)
    for path in ("/metrics", "/", "/-/healthy", "/nope"):
        get = sidecar.client.get(sidecar.url + path)
        head = sidecar.client.head(sidecar.url + path)
        assert head.status_code == get.status_code, path
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0


def test_name_filter_reaches_the_workers_families_and_the_process_ones(
    tmp_path: Path, procs: Procs
) -> None:
    procs.writer(tmp_path, "--checkouts", "3")
    sidecar = start_sidecar(procs, tmp_path)
    wanted = [
        "sqlalchemy_pool_checkouts_total",
        "process_resident_memory_bytes",
        "sqlalchemy_pool_checkout_wait_seconds",  # a family name: every sample of the histogram
    ]
    response = sidecar.client.get(sidecar.url + "/metrics", params=[("name[]", n) for n in wanted])
    names = {sample[0] for sample in parse(response.text)}
    assert names == {
        "sqlalchemy_pool_checkouts_total",
        "process_resident_memory_bytes",
        "sqlalchemy_pool_checkout_wait_seconds_bucket",
        "sqlalchemy_pool_checkout_wait_seconds_count",
        "sqlalchemy_pool_checkout_wait_seconds_sum",
    }
    checkouts = [s for s in parse(response.text) if s[0] == "sqlalchemy_pool_checkouts_total"]
    assert sum(s[2] for s in checkouts) == 3


def port_of(sidecar: Sidecar) -> int:
    return int(sidecar.url.rsplit(":", 1)[1])


def raw_status(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reply = conn.recv(4096)
    return int(reply.split(b" ", 2)[1])


def test_huge_headers_long_urls_and_path_traversal_are_refused(
    tmp_path: Path, procs: Procs
) -> None:
    sidecar = start_sidecar(procs, tmp_path)
    port = port_of(sidecar)
    long_url = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_status(port, long_url) == 414
    big_header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 93_000 + b"\r\n\r\n"
    assert raw_status(port, big_header) == 431
    many = b"".join(b"X-%d: a\r\n" % n for n in range(200))
    assert raw_status(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == 431
    for path in (
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"//etc/passwd",
        b"/metrics/../",
    ):
        assert raw_status(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 404, path
    assert sidecar.client.get(sidecar.url + "/metrics").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_idle_and_slow_sockets_do_not_stop_scrapes(
    tmp_path: Path, procs: Procs, scheme: str
) -> None:
    sidecar = tls_sidecar(tmp_path, procs) if scheme == "https" else start_sidecar(procs, tmp_path)
    # Half the connections say nothing; the other half start a TLS handshake or a request
    # and never finish it.
    partial = b"\x16\x03\x01\x00\xc8\x01" if scheme == "https" else b"GET /metrics HTTP/1.1\r\nX-a:"
    held = []
    try:
        for n in range(200):
            conn = socket.create_connection(("127.0.0.1", port_of(sidecar)), timeout=10)
            if n % 2:
                conn.sendall(partial)
            held.append(conn)
        for _ in range(3):
            assert sidecar.client.get(sidecar.url + "/metrics").status_code == 200
    finally:
        for conn in held:
            conn.close()


# --- TLS settings, checked with openssl s_client ---


def handshake(port: int, *args: str) -> dict[str, str] | None:
    """What `openssl s_client` negotiated (protocol, cipher, temp key), or None if refused."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    out = done.stdout
    if "Cipher is (NONE)" in out or "Cipher is" not in out:
        return None
    line = next(x for x in out.splitlines() if "Cipher is" in x)
    temp = next((x for x in out.splitlines() if x.startswith("Server Temp Key:")), "")
    return {"protocol": line.split(",")[1].strip(), "cipher": line.split()[-1], "key": temp}


def tls_sidecar(
    tmp_path: Path, procs: Procs, client_cert: tuple[Path, Path] | None = None, **tls: Any
) -> Sidecar:
    cert, key = self_signed(tmp_path)
    config = write_config(
        tmp_path,
        {"tls_server_config": {"cert_file": cert.name, "key_file": key.name, **tls}},
        name=f"web-{len(procs.started)}.yml",
    )
    context = ssl.create_default_context(cafile=cert)
    if client_cert:
        context.load_cert_chain(*client_cert)
    client = httpx.Client(verify=context, timeout=10)
    return start_sidecar(
        procs, tmp_path, f"--web.config.file={config}", scheme="https", client=client
    )


def test_cipher_suites_and_curve_preferences_are_applied(tmp_path: Path, procs: Procs) -> None:
    port = port_of(
        tls_sidecar(
            tmp_path,
            procs,
            cipher_suites=["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
            curve_preferences=["CurveP384"],
        )
    )
    assert handshake(port, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305") is None
    chosen = handshake(port, "-tls1_2")
    assert chosen is not None
    assert chosen["cipher"] == "ECDHE-RSA-AES256-GCM-SHA384"
    assert "secp384r1" in chosen["key"]
    for version in ("-tls1_2", "-tls1_3"):
        assert handshake(port, version, "-curves", "X25519") is None, version
        assert handshake(port, version, "-curves", "P-384") is not None, version


@pytest.mark.parametrize(("prefer", "expected"), [(True, "AES128-GCM"), (False, "CHACHA20")])
def test_prefer_server_cipher_suites_decides_whose_order_wins(
    tmp_path: Path, procs: Procs, prefer: bool, expected: str
) -> None:
    port = port_of(
        tls_sidecar(
            tmp_path,
            procs,
            cipher_suites=[
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ],
            prefer_server_cipher_suites=prefer,
        )
    )
    client_order = "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256"
    chosen = handshake(port, "-tls1_2", "-cipher", client_order)
    assert chosen is not None
    assert expected in chosen["cipher"]


def test_max_version_is_applied(tmp_path: Path, procs: Procs) -> None:
    # Empty lists leave the defaults, as in exporter-toolkit.
    port = port_of(
        tls_sidecar(tmp_path, procs, max_version="TLS12", cipher_suites=[], curve_preferences=[])
    )
    assert handshake(port, "-tls1_3") is None
    chosen = handshake(port)
    assert chosen is not None
    assert chosen["protocol"] == "TLSv1.2"


TLS_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "unknown suite": ({"cipher_suites": ["NOT_A_REAL_SUITE"]}, "NOT_A_REAL_SUITE"),
    "suites not a list": ({"cipher_suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, "list"),
    "TLS 1.3 suite": ({"cipher_suites": ["TLS_AES_128_GCM_SHA256"]}, "TLS 1.3"),
    "unknown curve": ({"curve_preferences": ["CurveP999"]}, "CurveP999"),
    "two curves": ({"curve_preferences": ["X25519", "CurveP256"]}, "curve_preferences"),
    "min above max": ({"min_version": "TLS13", "max_version": "TLS12"}, "min_version TLS13"),
    "TLS10": ({"min_version": "TLS10"}, "min_version TLS10"),
    "unknown version": ({"max_version": "TLS14"}, "max_version"),
    "any client cert": (
        {"client_auth_type": "RequireAnyClientCert", "client_ca_file": "server.crt"},
        "RequireAnyClientCert",
    ),
    "request client cert": (
        {"client_auth_type": "RequestClientCert", "client_ca_file": "server.crt"},
        "RequestClientCert",
    ),
    "CA without policy": ({"client_ca_file": "server.crt"}, "client_ca_file"),
    "prefer not a bool": ({"prefer_server_cipher_suites": "yes"}, "prefer_server_cipher_suites"),
}


@pytest.mark.parametrize("case", [*TLS_REFUSED, "http2", "header", "not UTF-8"])
def test_a_setting_that_cannot_be_applied_is_refused_with_one_line_naming_it(
    tmp_path: Path, case: str
) -> None:
    cert, key = self_signed(tmp_path)
    tls: dict[str, Any] = {"cert_file": cert.name, "key_file": key.name}
    config: dict[str, Any] = {"tls_server_config": tls}
    if case in TLS_REFUSED:
        tls.update(TLS_REFUSED[case][0])
        named = TLS_REFUSED[case][1]
    elif case == "http2":
        config["http_server_config"] = {"http2": True}
        named = "http2"
    else:
        config["http_server_config"] = {"headers": {"Server": "pool-exporter"}}
        named = "'Server'"
    path = write_config(tmp_path, config)
    if case == "not UTF-8":
        path.write_bytes(b"basic_auth_users:\n  caf\xe9: x\n")
        named = str(path)
    result = run("sidecar", f"--multiproc-dir={tmp_path}", f"--web.config.file={path}")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert named in line


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", b"postgresql://a@h/db\npostgresql://b@h/db\n"]
)
def test_a_database_url_file_that_is_not_one_line_of_text_is_one_error_line(
    tmp_path: Path, content: bytes
) -> None:
    url_file = tmp_path / "url"
    url_file.write_bytes(content)
    result = run("sidecar", f"--multiproc-dir={tmp_path}", f"--database-url-file={url_file}")
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: --database-url-file {url_file} ")


def client_certificates(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """A CA, a client certificate it signed, and a self-signed one it did not."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    made = {}
    for name in ("ca", "rogue"):
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                f"/CN={name}", "-keyout", str(key), "-out", str(cert))  # fmt: skip
        made[name] = (cert, key)
    csr, cert, key = tmp_path / "client.csr", tmp_path / "client.crt", tmp_path / "client.key"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=prometheus",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(made["ca"][0]), "-CAkey",
            str(made["ca"][1]), "-CAcreateserial", "-days", "1", "-out", str(cert))  # fmt: skip
    made["client"] = (cert, key)
    return made


@pytest.mark.parametrize("auth", ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"])
def test_client_certificates_are_verified_against_the_ca(
    tmp_path: Path, procs: Procs, auth: str
) -> None:
    certs = client_certificates(tmp_path)
    port = port_of(
        tls_sidecar(
            tmp_path, procs, certs["client"], client_auth_type=auth, client_ca_file="ca.crt"
        )
    )
    server_ca = tmp_path / "server.crt"

    def scrape(client_cert: str | None) -> int | None:
        context = ssl.create_default_context(cafile=server_ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # the verdict within the handshake
        if client_cert:
            cert, key = certs[client_cert]
            context.load_cert_chain(cert, key)
        try:
            with httpx.Client(verify=context, timeout=10) as client:
                return client.get(f"https://127.0.0.1:{port}/metrics").status_code
        except httpx.HTTPError:
            return None

    assert scrape("client") == 200
    assert scrape("rogue") is None
    assert scrape(None) == (None if auth == "RequireAndVerifyClientCert" else 200)
