"""Signature and payload probes against the reference receiver businesses copy (``scripts/webhook_receiver.py``).

The real receiver runs in a subprocess on a loopback port with its SQLite state. Every probe is one
request (two where a first, accepted one sets the scene) sent with ``http.client``, so headers and bodies
go out exactly as written (bytes headers, no Content-Length, chunked). A probe is answered correctly
when the status is the documented one, a 400 names the field or header at fault, and a refused request
leaves no trace in the receiver's store.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import importlib.util
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from include.crm.signature import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, MalformedSignature, sign, verify_signature
from tests.conftest import ROOT
from tests.crm_servers import ReceiverProcess


def _load_receiver():
    """The receiver script as a module (for its limits; the probes talk to it over HTTP)."""
    spec = importlib.util.spec_from_file_location("webhook_receiver", ROOT / "scripts" / "webhook_receiver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECEIVER = _load_receiver()
LABEL_DATE = "2026-11-14"
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@dataclass
class Answer:
    status: int
    body: dict


class Client:
    """Requests to one receiver, written byte for byte."""

    def __init__(self, receiver: ReceiverProcess) -> None:
        self.receiver = receiver
        self.secret = receiver.secret

    def send(self, body: bytes = b"", headers: dict[str, str | bytes] | None = None, method: str = "POST",
             length: int | None | str = "auto") -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.receiver.port, timeout=30)
        try:
            conn.putrequest(method, "/", skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if length == "auto":
                conn.putheader("Content-Length", str(len(body)))
            elif length is not None:
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
            if length is not None and body:
                conn.send(body)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return Answer(response.status, json.loads(data) if data else {})

    def signed(self, body: bytes, key: str, timestamp: int | None = None, secret: str | None = None,
               signed_body: bytes | None = None, signed_key: str | None = None,
               content_type: str | None = "application/json", **kwargs) -> Answer:
        """``body`` under idempotency key ``key`` with a valid signature (of ``signed_body``/``signed_key`` if given)."""
        signature = sign(secret or self.secret, body if signed_body is None else signed_body,
                         key if signed_key is None else signed_key, timestamp)
        headers = {IDEMPOTENCY_HEADER: key, SIGNATURE_HEADER: signature}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.send(body, headers, **kwargs)


def record(key: str, **fields) -> dict:
    return {"customer_key": key, "segment_id": 1, "segment_name": "High-value core", "clv_tier": "A",
            "priority": "high", "segment_action": "Call", "holdout": False, **fields}


def batch(key: str, records: list | None = None, label_date=LABEL_DATE, **extra) -> bytes:
    """A documented body: one good record of customer ``C-<key>`` unless ``records`` is given."""
    return json.dumps({"batch_key": key, "label_date": label_date,
                       "records": [record(f"C-{key}")] if records is None else records, **extra}).encode()


@dataclass(frozen=True)
class Probe:
    """One request to the receiver and what the answer must be."""

    name: str
    send: Callable[[Client, str], Answer]  # (client, idempotency key) -> the answer judged
    status: int
    error: str | None = None  # a 400 names this (regular expression over the "error" text)
    applied: bool = False  # the probe's batch is in the store afterwards


def _replayed(c: Client, k: str) -> Answer:
    first = c.signed(batch(k), k)
    assert first.status == 202, first
    return c.signed(batch(k), k)


def _older_than_held(c: Client, k: str) -> Answer:
    newer = c.signed(batch(k), k)
    assert newer.status == 202, newer
    older = batch(k + "-old", [record(f"C-{k}", segment_id=2, segment_name="Hibernating")], label_date="2026-11-07")
    return c.signed(older, k + "-old")


def _oversize(c: Client, k: str) -> Answer:
    # Only the headers go out: the receiver must answer without reading 32 MB.
    return c.send(b"", {"Content-Type": "application/json", IDEMPOTENCY_HEADER: k},
                  length=RECEIVER.MAX_BODY_BYTES + 1)


def _arabic_t(c: Client, k: str) -> Answer:
    body = batch(k)
    good = sign(c.secret, body, k)
    t, v1 = good.split(",")
    header = f"{t.translate(ARABIC_INDIC)},{v1}".encode()  # what a UTF-8 client sends
    return c.send(body, {"Content-Type": "application/json", IDEMPOTENCY_HEADER: k, SIGNATURE_HEADER: header})


def _empty_secret_mac(c: Client, k: str) -> Answer:
    body, now = batch(k), int(time.time())
    mac = hmac.new(b"", f"{now}.{k}.".encode() + body, hashlib.sha256).hexdigest()
    return c.send(body, {"Content-Type": "application/json", IDEMPOTENCY_HEADER: k, SIGNATURE_HEADER: f"t={now},v1={mac}"})


def _field(field: str, value) -> Callable[[Client, str], Answer]:
    return lambda c, k: c.signed(batch(k, [record(f"C-{k}", **{field: value})]), k)


def _raw(body: bytes) -> Callable[[Client, str], Answer]:
    return lambda c, k: c.signed(body, k)


def _headers(**headers) -> Callable[[Client, str], Answer]:
    def send(c: Client, k: str) -> Answer:
        body = batch(k)
        sent = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: k, SIGNATURE_HEADER: sign(c.secret, body, k)}
        for name, value in headers.items():
            name = {"key": IDEMPOTENCY_HEADER, "signature": SIGNATURE_HEADER, "content_type": "Content-Type"}[name]
            if value is None:
                sent.pop(name)
            else:
                sent[name] = value(c, k, body, sent[name]) if callable(value) else value
        return c.send(body, sent)
    return send


PROBES = [
    # -- signature and headers ------------------------------------------------------------------
    Probe("valid signed batch", lambda c, k: c.signed(batch(k), k), 202, applied=True),
    Probe("same request again (replay of a delivered key)", _replayed, 200, applied=True),
    Probe("no signature header", _headers(signature=None), 400, SIGNATURE_HEADER),
    Probe("signature not t=..,v1=..", _headers(signature="sha256=abc"), 400, SIGNATURE_HEADER),
    Probe("upper-case hex MAC", _headers(signature=lambda c, k, b, s: s.replace(s[-64:], s[-64:].upper())),
          400, SIGNATURE_HEADER),
    Probe("timestamp in Arabic-Indic digits", _arabic_t, 400, SIGNATURE_HEADER),
    Probe("timestamp of 13 digits", _headers(signature=lambda c, k, b, s: "t=000" + s[2:]), 400, SIGNATURE_HEADER),
    Probe("signed with another secret", lambda c, k: c.signed(batch(k), k, secret="not-the-secret"), 401),
    Probe("body changed after signing", lambda c, k: c.signed(batch(k), k, signed_body=batch(k) + b" "), 401),
    Probe("captured signature replayed under a new key",
          lambda c, k: c.signed(batch(k), k, signed_key=k + "-original"), 401),
    Probe("stale timestamp (10 minutes old)", lambda c, k: c.signed(batch(k), k, timestamp=int(time.time()) - 600), 401),
    Probe("future timestamp (10 minutes ahead)",
          lambda c, k: c.signed(batch(k), k, timestamp=int(time.time()) + 600), 401),
    Probe("MAC under an empty secret", _empty_secret_mac, 401),
    Probe("no Idempotency-Key", _headers(key=None), 400, IDEMPOTENCY_HEADER),
    Probe("Idempotency-Key of 201 characters", _headers(key="k" * 201), 400, IDEMPOTENCY_HEADER),
    Probe("non-ASCII Idempotency-Key", _headers(key="clé".encode()), 400, IDEMPOTENCY_HEADER),
    # -- transport --------------------------------------------------------------------------------
    Probe("no Content-Length (chunked)", lambda c, k: c.send(
        b"0\r\n\r\n", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, length=None), 411),
    Probe("body above the size limit", _oversize, 413),
    Probe("Content-Type text/plain", lambda c, k: c.signed(batch(k), k, content_type="text/plain"), 415),
    Probe("no Content-Type", lambda c, k: c.signed(batch(k), k, content_type=None), 415),
    Probe("GET", lambda c, k: c.send(method="GET", length=None), 405),
    # -- body ----------------------------------------------------------------------------------------
    Probe("empty body", _raw(b""), 400, "not JSON"),
    Probe("body not UTF-8", _raw(b'{"label_date": "\xff"}'), 400, "UTF-8"),
    Probe("body not JSON", _raw(b"label_date=2026-11-14"), 400, "not JSON"),
    Probe("body a JSON array", _raw(b"[]"), 400, "JSON object"),
    Probe("body nested 100,000 deep", _raw(b"[" * 100_000 + b"]" * 100_000), 400, "nested"),
    Probe("NaN in a record", _raw(b'{"label_date": "2026-11-14", "records": [{"customer_key": "C-nan", '
                                  b'"segment_id": NaN}]}'), 400, "NaN"),
    Probe("label_date missing", lambda c, k: c.signed(batch(k, label_date=None), k), 400, "label_date"),
    Probe("label_date not a date", lambda c, k: c.signed(batch(k, label_date="14/11/2026"), k), 400, "label_date"),
    Probe("label_date a number", lambda c, k: c.signed(batch(k, label_date=20261114), k), 400, "label_date"),
    Probe("records an object", lambda c, k: c.signed(batch(k, records={"customer_key": "C"}), k), 400, "records"),
    Probe("a record a string", lambda c, k: c.signed(batch(k, records=["C-1"]), k), 400, r"records\[0\]"),
    Probe("customer_key missing", lambda c, k: c.signed(batch(k, [{"segment_id": 1}]), k), 400,
          r"records\[0\]\.customer_key"),
    Probe("customer_key a list", _field("customer_key", ["C1", "C2"]), 400, r"records\[0\]\.customer_key"),
    Probe("customer_key an object", _field("customer_key", {"id": "C1"}), 400, r"records\[0\]\.customer_key"),
    Probe("customer_key a number", _field("customer_key", 42), 400, r"records\[0\]\.customer_key"),
    Probe("customer_key blank", _field("customer_key", "  "), 400, r"records\[0\]\.customer_key"),
    Probe("customer_key twice in one batch", lambda c, k: c.signed(batch(k, [record("C-twice"), record("C-twice")]), k),
          400, r"records\[1\]\.customer_key repeats"),
    Probe("segment_id a string", _field("segment_id", "1"), 400, r"records\[0\]\.segment_id must be an integer"),
    Probe("segment_id a boolean", _field("segment_id", True), 400, r"records\[0\]\.segment_id"),
    Probe("segment_name a number", _field("segment_name", 7), 400, r"records\[0\]\.segment_name must be a string"),
    Probe("holdout a string", _field("holdout", "yes"), 400, r"records\[0\]\.holdout must be a boolean"),
    Probe("segment_action an object", _field("segment_action", {"do": "call"}), 400, r"records\[0\]\.segment_action"),
    Probe("1e999 (infinity) inside an extra field", _raw(b'{"label_date": "2026-11-14", "records": [{"customer_key": '
                                                         b'"C-big", "notes": [1, {"x": 1e999}]}]}'), 400,
          r"records\[0\]\.notes holds a number that is not finite"),
    Probe("an extra field (a newer sender's) is kept as sent", _field("record_ids", ["hs-1", "hs-2"]), 202,
          applied=True),
    Probe("labels older than those held (forward only)", _older_than_held, 202, applied=True),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    receiver = ReceiverProcess(tmp_path_factory.mktemp("receiver") / "receiver.sqlite").start()
    try:
        yield Client(receiver)
        assert receiver.proc.poll() is None, "the receiver died during the probes"
    finally:
        receiver.kill()


def stored(client: Client, key: str) -> tuple[int, int]:
    """``(deliveries under key, customers stored from it)`` in the receiver's SQLite state."""
    with sqlite3.connect(client.receiver.state) as conn:
        return (conn.execute("SELECT COUNT(*) FROM deliveries WHERE idempotency_key = ?", (key,)).fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM customers WHERE idempotency_key = ?", (key,)).fetchone()[0])


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_is_answered_correctly(client, probe):
    key = "probe-" + hashlib.sha256(probe.name.encode()).hexdigest()[:16]
    answer = probe.send(client, key)
    assert answer.status == probe.status, (probe.name, answer)
    if probe.error is not None:
        assert re.search(probe.error, answer.body.get("error", "")), answer
    if probe.applied:
        assert stored(client, key) == (1, 1)
    else:
        assert stored(client, key) == (0, 0), "a refused request left a trace"
    if probe.name.startswith("labels older"):
        assert answer.body == {"status": "accepted", "applied": 0, "older_ignored": 1}
        with sqlite3.connect(client.receiver.state) as conn:
            held = conn.execute("SELECT label_date FROM customers WHERE customer_key = ?", (f"C-{key}",)).fetchone()
        assert held == (LABEL_DATE,)  # the newer labels stay


def test_the_probes_cover_the_issue():
    assert len(PROBES) >= 28
    names = " ".join(p.name for p in PROBES)
    for needed in ("Arabic-Indic", "customer_key a list", "customer_key an object", "stale", "future", "replay",
                   "empty body", "Content-Type", "size limit"):
        assert needed in names


@pytest.mark.parametrize("secret", ["", " ", "\t", " \n "])
def test_receiver_refuses_to_start_with_a_blank_secret(tmp_path, secret):
    with pytest.raises(RuntimeError, match="no signing secret"):
        ReceiverProcess(tmp_path / "receiver.sqlite", secret=secret).start()
    with pytest.raises(RuntimeError, match="no signing secret"):
        ReceiverProcess(tmp_path / "receiver.sqlite", secret=None, extra_args=("--secret", secret)).start()


def test_signature_accepts_only_ascii_digits_and_refuses_blank_secrets():
    body = b'{"records": []}'
    header = sign("k", body, "key", timestamp=1_700_000_000)
    assert verify_signature("k", body, header, "key", now=1_700_000_000)
    t, v1 = header.split(",")
    for digits in (ARABIC_INDIC, str.maketrans("0123456789", "０１２３４５６７８９"),  # fullwidth
                   str.maketrans("0123456789", "߀߁߂߃߄߅߆߇߈߉")):  # NKo
        with pytest.raises(MalformedSignature):
            verify_signature("k", body, f"{t.translate(digits)},{v1}", "key", now=1_700_000_000)
    for blank in ("", " ", "\t\n"):
        with pytest.raises(ValueError, match="secret is empty or blank"):
            sign(blank, body, "key")
        with pytest.raises(ValueError, match="secret is empty or blank"):
            verify_signature(blank, body, header, "key", now=1_700_000_000)
