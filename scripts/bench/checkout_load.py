#!/usr/bin/env python3
"""Checkout throughput and latency, and zero oversell, against a running shop.

Targets a shop on loopback with rate limits off; bounded in time and count.
Usage: checkout_load.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD [SECONDS] [WORKERS]

1. Sustained: WORKERS customers each loop PUT /cart + POST /orders (a new
   Idempotency-Key each time, the success card) for SECONDS; reports
   checkouts/s (confirmed orders) and POST /orders latency p50/p99.
2. Contention: 200 checkouts of 1 unit race for 50 units; exactly 50 must be
   confirmed, the rest failed with insufficient stock.
After each phase the stock is checked: on_hand = initial - units confirmed,
reserved = 0. Exit 1 on any oversell or unsettled order.
"""
import http.client
import json
import statistics
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

CARD = "4242424242424242"
PASSWORD = "plum kettle orbit 42"


class Client:
    def __init__(self, base, token=None):
        url = urlparse(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self.token = token

    def call(self, method, path, body=None, headers=None):
        all_headers = {"content-type": "application/json"}
        if self.token:
            all_headers["authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=all_headers)
                response = self.conn.getresponse()
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.conn.close()


def sign_in(base, email, password):
    status, body = Client(base).call("POST", "/api/v1/auth/token", {"email": email, "password": password})
    assert status == 200, (status, body)
    return body["access_token"]


def customer(base):
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    status, body = Client(base).call(
        "POST", "/api/v1/users", {"email": email, "password": PASSWORD, "display_name": "Bench"})
    assert status == 201, (status, body)
    return sign_in(base, email, PASSWORD)


def product(admin, sku, units):
    status, body = admin.call("POST", "/api/v1/products", {
        "sku": sku, "name": f"Bench {sku}", "price": {"amount_minor": 500, "currency": "EUR"}})
    assert status == 201, (status, body)
    status, level = admin.call("POST", f"/api/v1/inventory/{sku}/adjustments",
                               {"quantity": units, "reason": "receive"})
    assert status == 200, (status, level)
    return body["id"]


def checkout(client, product_id):
    """One checkout; returns (latency ms, final status)."""
    status, _ = client.call("PUT", "/api/v1/cart", {"items": [{"product_id": product_id, "quantity": 1}]})
    assert status == 200, status
    started = time.perf_counter()
    status, order = client.call("POST", "/api/v1/orders", {"payment_method": {"card_number": CARD}},
                                {"idempotency-key": uuid.uuid4().hex})
    elapsed = (time.perf_counter() - started) * 1000
    assert status in (201, 202), (status, order)
    while order["status"] not in ("confirmed", "failed", "cancelled"):
        time.sleep(0.05)
        _, order = client.call("GET", f"/api/v1/orders/{order['id']}")
    return elapsed, order


def check_stock(admin, sku, initial, confirmed):
    _, level = admin.call("GET", f"/api/v1/inventory/{sku}")
    ok = level["on_hand"] == initial - confirmed and level["reserved"] == 0 and level["on_hand"] >= 0
    print(f"  stock {sku}: on_hand {level['on_hand']} (expected {initial - confirmed}), "
          f"reserved {level['reserved']} -> {'ok, no oversell' if ok else 'OVERSOLD OR LEAKED'}")
    return ok


def run(tokens, product_id, seconds=None, total=None):
    lock = threading.Lock()
    latencies, outcomes, issued = [], [], [0]
    deadline = time.monotonic() + seconds if seconds else None

    def worker(token):
        client = Client(BASE, token)
        while True:
            with lock:
                if total is not None and issued[0] >= total:
                    return
                issued[0] += 1
            if deadline and time.monotonic() >= deadline:
                return
            ms, order = checkout(client, product_id)
            with lock:
                latencies.append(ms)
                outcomes.append(order)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, outcomes, time.monotonic() - started


def percentile(samples, p):
    samples = sorted(samples)
    return samples[min(len(samples) - 1, max(0, int(len(samples) * p) - 1))]


def main():
    global BASE
    BASE = sys.argv[1].rstrip("/")
    admin = Client(BASE, sign_in(BASE, sys.argv[2], sys.argv[3]))
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    tokens = [customer(BASE) for _ in range(workers)]
    ok = True

    sku = f"BENCH-{uuid.uuid4().hex[:8].upper()}"
    initial = 1_000_000
    product_id = product(admin, sku, initial)
    run(tokens, product_id, total=workers * 2)  # warm-up (counted in the stock check)
    warm = workers * 2
    latencies, outcomes, elapsed = run(tokens, product_id, seconds=seconds)
    confirmed = sum(1 for o in outcomes if o["status"] == "confirmed")
    print(f"sustained, {workers} customers, {elapsed:.1f} s: {confirmed / elapsed:.1f} checkouts/s "
          f"({confirmed} confirmed of {len(outcomes)}); POST /orders p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms")
    ok &= confirmed == len(outcomes)
    ok &= check_stock(admin, sku, initial, confirmed + warm)

    sku = f"LAST-{uuid.uuid4().hex[:8].upper()}"
    product_id = product(admin, sku, 50)
    latencies, outcomes, elapsed = run(tokens, product_id, total=200)
    confirmed = sum(1 for o in outcomes if o["status"] == "confirmed")
    short = sum(1 for o in outcomes if o["status"] == "failed" and "insufficient stock" in (o.get("reason") or ""))
    print(f"contention, 200 checkouts for 50 units: {confirmed} confirmed, {short} failed (insufficient stock), "
          f"{elapsed:.1f} s; POST /orders p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms")
    ok &= confirmed == 50 and short == 150
    ok &= check_stock(admin, sku, 50, confirmed)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
