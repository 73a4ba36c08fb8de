#!/usr/bin/env python3
"""Sign-in latency, and whether an unknown email and a wrong password take the
same time (they must: otherwise timing reveals which emails have accounts).

Targets a running shop on loopback with rate limits off; bounded in count.
Usage: login_timing.py BASE_URL [ROUNDS] [TOLERANCE]
Exit 0 when the medians differ by at most TOLERANCE (default 0.15 = 15 %).
"""
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid


def post(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
            response.read()
    except urllib.error.HTTPError as error:
        status = error.code
        error.read()
    return status, (time.perf_counter() - started) * 1000


def summary(name, samples):
    samples = sorted(samples)
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    print(f"{name:<16} n={len(samples):<4} median={statistics.median(samples):7.2f} ms"
          f"  mean={statistics.mean(samples):7.2f} ms  p95={p95:7.2f} ms")
    return statistics.median(samples)


def main():
    base = sys.argv[1].rstrip("/")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    tolerance = float(sys.argv[3]) if len(sys.argv) > 3 else 0.15
    password = "plum kettle orbit 42"
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    status, _ = post(base, "/api/v1/users", {"email": email, "password": password, "display_name": "Bench"})
    assert status == 201, f"registration answered {status}"
    # Warm up connections, caches and the hasher.
    for _ in range(5):
        post(base, "/api/v1/auth/token", {"email": email, "password": password})

    success, wrong, unknown = [], [], []
    for i in range(rounds):
        # Interleave, so drift in machine load hits all three alike.
        status, ms = post(base, "/api/v1/auth/token", {"email": email, "password": password})
        assert status == 200, status
        success.append(ms)
        status, ms = post(base, "/api/v1/auth/token", {"email": email, "password": f"wrong password {i}"})
        assert status == 401, status
        wrong.append(ms)
        status, ms = post(base, "/api/v1/auth/token", {"email": f"nobody-{i}@example.com", "password": password})
        assert status == 401, status
        unknown.append(ms)

    summary("success", success)
    a = summary("wrong password", wrong)
    b = summary("unknown email", unknown)
    difference = abs(a - b) / max(a, b)
    verdict = "PASS" if difference <= tolerance else "FAIL"
    print(f"{verdict}: medians differ by {difference:.1%} (tolerance {tolerance:.0%})")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
