"""The client's HTTP layer: fresh signatures per attempt, capped exponential backoff, clear errors."""

from __future__ import annotations

import json

import httpx
import pytest

from federation.http_client import RetryPolicy, ServiceClient, Task
from federation.service.auth import HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, RequestAuthenticator, ReplayGuard
from federation.service.errors import ServiceRequestError
from secagg.keys import IdentityKey

IDENTITY = IdentityKey.generate()


def client_with(handler, policy=None, sleeps=None):
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://server")
    service = ServiceClient("http://server", http=http, retry=policy or RetryPolicy(),
                            sleep=(sleeps.append if sleeps is not None else lambda _: None))
    service.set_identity(3, IDENTITY, 9)
    return service


def test_transient_failures_are_retried_with_a_fresh_signature_each_time():
    seen, sleeps = [], []
    verifier = RequestAuthenticator(9, ReplayGuard(not_before=0))

    def handler(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        verifier.authenticate(method=request.method, target=target, headers=request.headers,
                              body=request.content, public_key_of={3: IDENTITY.public_bytes}.get)
        seen.append(dict(request.headers))
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused")
        if len(seen) in (2, 3):
            return httpx.Response(503, json={"detail": "journal busy"})
        return httpx.Response(200, json={"round_index": 2, "stage": "unmask", "duplicate": False})

    service = client_with(handler, sleeps=sleeps)
    assert service.submit(2, "unmask", b"\x01\x02") is False
    assert len(seen) == 4
    # A retry is a new request: new nonce (so it is not a replay), a signature over it.
    assert len({h[HEADER_NONCE.lower()] for h in seen}) == 4
    assert len({h[HEADER_SIGNATURE.lower()] for h in seen}) == 4
    assert all(h[HEADER_TIMESTAMP.lower()].isdigit() for h in seen)
    assert len(sleeps) == 3


def test_backoff_is_exponential_jittered_and_capped():
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0)
    delays = policy.delays()
    samples = [next(delays) for _ in range(2000)]
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0] + [3.0] * 1995
    assert all(0 <= d <= c for d, c in zip(samples, ceilings))
    # Full jitter: the capped waits are spread over [0, 3]; their mean is 1.5 (sd of the mean of
    # 1995 uniforms is 0.019, so +-0.1 fails with probability < 1e-6).
    tail = samples[5:]
    assert abs(sum(tail) / len(tail) - 1.5) < 0.1


def test_client_errors_are_not_retried_and_carry_the_servers_message():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(403, json={"detail": "client 3 may not act as or read client 4"})

    with pytest.raises(ServiceRequestError, match="403 client 3 may not act as or read client 4") as raised:
        client_with(handler).request("GET", "/v1/clients/4/task")
    assert raised.value.status_code == 403 and len(calls) == 1


def test_the_client_gives_up_after_the_policys_time_budget():
    def handler(request):
        raise httpx.ConnectError("connection refused")

    policy = RetryPolicy(initial_delay=0.01, max_delay=0.01, max_elapsed=0.05)
    service = ServiceClient("http://server", http=httpx.Client(transport=httpx.MockTransport(handler)),
                            retry=policy)
    with pytest.raises(ServiceRequestError, match="gave up after .*ConnectError"):
        service.run_info()


def test_the_task_long_poll_asks_for_a_change_and_decodes_bytes():
    def handler(request):
        assert request.url.params["after_version"] == "4" and request.url.params["wait"] == "2.0"
        return httpx.Response(200, json={"run_status": "running", "version": 5, "round_index": 1,
                                         "stage": "share_keys", "request": "AAEC", "plan": None})

    task = client_with(handler).task(after_version=4, wait=2.0)
    assert task == Task("running", 5, 1, "share_keys", False, False, b"\x00\x01\x02", None, False, None, False)


def test_json_bodies_are_sent_as_signed_json():
    def handler(request):
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {"num_samples": 7, "train_loss": None, "sample_events": []}
        return httpx.Response(200, json={"round_index": 0, "stage": "report", "duplicate": True})

    assert client_with(handler).report(0, 7, float("nan")) is True  # a NaN loss travels as null
