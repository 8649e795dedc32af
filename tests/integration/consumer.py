"""A consumer of a rotated key, as a real application would be: it never caches the key.

    python -m tests.integration.consumer KEYFILE WHOAMI_URL OUTFILE [--interval 0.02]
                                         [--max-seconds 300]

Every ``interval`` seconds it reads KEYFILE (rendered by ``bao agent``) and calls
``GET WHOAMI_URL`` with ``Authorization: Bearer <key>``. An empty, missing or unreadable
file is "no key yet", not a failure. A 200 is a success; anything else (another status,
a transport error) is a failure, recorded with the key's fingerprint (sha256[:12]) and
the time: never the key itself. It prints ``ready`` on stdout after its first success.

On SIGTERM or SIGINT (or after ``max-seconds``, so it can never outlive a broken test)
it writes a JSON summary to OUTFILE and exits 0::

    {"successes": int, "failures": int, "no_key": int,
     "first_success_at": float | null, "last_success_at": float | null,
     "max_success_gap": float,                # longest time between two successes
     "ok_fingerprints": [fp, ...],            # in the order first seen with a 200
     "last_ok_fingerprint": fp | null,
     "failed": [{"at": float, "fingerprint": fp, "status": int | null,
                 "error": str | null}, ...]}  # capped at MAX_RECORDED

Times are ``time.time()`` (comparable with the test's clock). Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import Any

MAX_RECORDED = 1000
TIMEOUT = 2.0


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def read_key(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def whoami(url: urllib.parse.SplitResult, key: str) -> tuple[int | None, str | None]:
    """(status, None) when the server answered, (None, error class) when it did not."""
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=TIMEOUT)
    try:
        conn.request("GET", url.path, headers={"Authorization": f"Bearer {key}",
                                               "Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__
    finally:
        conn.close()


class Consumer:
    def __init__(self, key_file: Path, url: str) -> None:
        self.key_file = key_file
        self.url = urllib.parse.urlsplit(url)
        self.successes = 0
        self.failures = 0
        self.no_key = 0
        self.first_success_at: float | None = None
        self.last_success_at: float | None = None
        self.max_success_gap = 0.0
        self.ok_fingerprints: list[str] = []
        self.last_ok_fingerprint: str | None = None
        self.failed: list[dict[str, Any]] = []
        self.stopping = False

    def once(self) -> None:
        key = read_key(self.key_file)
        if key is None:
            self.no_key += 1
            return
        status, error = whoami(self.url, key)
        now = time.time()
        fp = fingerprint(key)
        if status == 200:
            if self.first_success_at is None:
                print("ready", flush=True)
                self.first_success_at = now
            else:
                assert self.last_success_at is not None
                self.max_success_gap = max(self.max_success_gap, now - self.last_success_at)
            self.last_success_at = now
            self.successes += 1
            self.last_ok_fingerprint = fp
            if fp not in self.ok_fingerprints:
                self.ok_fingerprints.append(fp)
            return
        self.failures += 1
        if len(self.failed) < MAX_RECORDED:
            self.failed.append({"at": now, "fingerprint": fp, "status": status, "error": error})

    def summary(self) -> dict[str, Any]:
        return {"successes": self.successes, "failures": self.failures, "no_key": self.no_key,
                "first_success_at": self.first_success_at,
                "last_success_at": self.last_success_at,
                "max_success_gap": self.max_success_gap,
                "ok_fingerprints": self.ok_fingerprints,
                "last_ok_fingerprint": self.last_ok_fingerprint,
                "failed": self.failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consumer", description=__doc__.splitlines()[0])
    parser.add_argument("key_file", type=Path)
    parser.add_argument("whoami_url")
    parser.add_argument("out_file", type=Path)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)

    consumer = Consumer(args.key_file, args.whoami_url)

    def stop(signum: int, frame: FrameType | None) -> None:
        consumer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.max_seconds
    while not consumer.stopping and time.monotonic() < deadline:
        consumer.once()
        time.sleep(args.interval)

    tmp = args.out_file.with_name(args.out_file.name + ".tmp")
    tmp.write_text(json.dumps(consumer.summary(), indent=1))
    os.replace(tmp, args.out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
