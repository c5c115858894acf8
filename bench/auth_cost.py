"""What a failed basic-auth attempt costs the sidecar, per kind of user name.

Starts a real `pool-exporter sidecar` with two users whose bcrypt hashes differ in cost (4 and
`--dear-cost`), then times failed scrapes for an unknown user, the cheap user and the dear one,
in interleaved rounds, and prints the median of each. The three should be equal within noise:
a difference would let a client tell which user names exist.

    .venv/bin/python bench/auth_cost.py [--dear-cost 11] [--rounds 3] [--attempts 7]
        [--pool-exporter .venv/bin/pool-exporter]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import httpx
import yaml

from pool_exporter.incident.promserver import free_port

USERS = ("nobody", "cheap", "dear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dear-cost", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=7)
    parser.add_argument(
        "--pool-exporter", default=str(Path(sys.executable).parent / "pool-exporter")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pool-exporter-auth-") as tmp:
        config = Path(tmp) / "web.yml"
        hashes = {
            "cheap": bcrypt.hashpw(b"cheap-password", bcrypt.gensalt(4)).decode(),
            "dear": bcrypt.hashpw(b"dear-password", bcrypt.gensalt(args.dear_cost)).decode(),
        }
        config.write_text(yaml.safe_dump({"basic_auth_users": hashes}))
        port = free_port()
        sidecar = subprocess.Popen(
            [args.pool_exporter, "sidecar", f"--web.listen-address=127.0.0.1:{port}",
             f"--multiproc-dir={tmp}", f"--web.config.file={config}"],
            env={**os.environ, "POOL_EXPORTER_DATABASE_URL": ""},
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            print(summary(measure(port, args.rounds, args.attempts), args.dear_cost))
        finally:
            sidecar.terminate()
            sidecar.wait(10)


def measure(port: int, rounds: int, attempts: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    times: dict[str, list[float]] = {user: [] for user in USERS}
    with httpx.Client(timeout=60) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.get(f"http://127.0.0.1:{port}/-/healthy")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for _ in range(rounds):
            for user in USERS:
                token = base64.b64encode(f"{user}:wrong".encode()).decode()
                for _ in range(attempts):
                    t0 = time.perf_counter()
                    status = client.get(url, headers={"Authorization": f"Basic {token}"})
                    times[user].append(time.perf_counter() - t0)
                    assert status.status_code == 401, status
    return {user: statistics.median(values) * 1000 for user, values in times.items()}


def summary(medians: dict[str, float], dear_cost: int) -> str:
    shown = ", ".join(f"{user} {ms:.1f} ms" for user, ms in medians.items())
    load = os.getloadavg()[0]
    return f"failed attempt, median (costs 4 and {dear_cost}; load {load:.1f}): {shown}"


if __name__ == "__main__":
    main()
