"""Webhook signatures, callback URL checks and retry delays (app.webhooks), and the event
stream's wire format (app.events): pure functions, no services."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from app.events import Snapshot, format_event
from app.schemas import JobOptions, check_callback_url
from app.settings import Settings
from app.webhooks import backoff, refused_address, sign, verify

SECRET = "whsec-test-0123456789"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_as_documented() -> None:
    body = b'{"event":"job.ended"}'
    header = sign(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_a_fresh_signature_and_refuses_tampering_and_replays() -> None:
    body = b'{"job":{"state":"succeeded"}}'
    now = int(time.time())
    header = sign(SECRET, now, body)
    assert verify(SECRET, header, body)
    assert not verify(SECRET, header, body.replace(b"succeeded", b"failed"))
    assert not verify("another-secret", header, body)
    assert not verify(SECRET, sign(SECRET, now - 3600, body), body)  # a replay, an hour old
    assert not verify(SECRET, "v1=abc", body)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "example.com/hook",
        "https://user:pw@example.com/hook",
        "https://example.com/a b",
        "https://example.com:99999/hook",
        "https://example.com/" + "a" * 2100,
        "http://exa\nmple.com/",
    ],
)
def test_callback_urls_must_be_plain_http_or_https(url: str) -> None:
    with pytest.raises(ValueError, match="callback_url"):
        check_callback_url(url)
    with pytest.raises(ValueError, match="callback_url"):
        JobOptions(callback_url=url)


def test_a_good_callback_url_is_kept_in_the_job_options() -> None:
    options = JobOptions(callback_url="https://hooks.example.com/pagemill?x=1")
    assert options.model_dump(exclude_none=True) == {
        "callback_url": "https://hooks.example.com/pagemill?x=1"
    }
    assert JobOptions(callback_url="").callback_url is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_and_local_addresses_are_refused_unless_allowed(url: str) -> None:
    reason = refused_address(url, Settings(webhook_allow_private=False))
    assert reason is not None and "PAGEMILL_WEBHOOK_ALLOW_PRIVATE" in reason
    assert refused_address(url, Settings(webhook_allow_private=True)) is None


def test_a_public_address_is_not_refused() -> None:
    # A literal address: nothing is resolved over the network.
    assert refused_address("https://93.184.215.14/hook", Settings()) is None


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    settings = Settings(webhook_backoff_seconds=2.0, webhook_backoff_max_seconds=60.0)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (40, 60.0)):
        delays = [backoff(attempt, settings) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays), (attempt, min(delays))
        assert len(set(delays)) > 1  # jitter: not all the same


def test_an_event_names_its_kind_id_and_json_data() -> None:
    snapshot = Snapshot({"id": "a" * 32, "state": "running", "pages_done": 2})
    text = format_event("progress", snapshot.id, snapshot.data)
    lines = text.split("\n")
    assert lines[0] == f"id: {snapshot.id}"
    assert lines[1] == "event: progress"
    assert lines[2].startswith("data: {") and '"pages_done":2' in lines[2]
    assert text.endswith("\n\n")


def test_event_ids_change_exactly_when_the_snapshot_does() -> None:
    one = Snapshot({"state": "running", "pages_done": 1})
    same = Snapshot({"pages_done": 1, "state": "running"})
    other = Snapshot({"state": "running", "pages_done": 2})
    assert one.id == same.id
    assert one.id != other.id
    assert not one.terminal and Snapshot({"state": "partial"}).terminal
