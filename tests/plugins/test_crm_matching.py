"""Labels land on the CRM's own records (issue #29): matched by native id, never created by default;
merges, splits and renames are mirrored exactly once.

Real DuckDB warehouses and ``PushSegmentsOperator.execute()`` against the loopback
HubSpot and Salesforce servers of ``tests/crm_servers.py``, which enforce the
vendors' documented contracts (``batch/update`` never creates, ``upsert``
does; Salesforce ``update`` rejects unknown Ids). Identity records, merges
(``identity_changes``) and published labels are written by hand.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from include.crm.contract import CURRENT_OUTBOX_SQL, PUSH_FIELDS
from include.crm.matching import CrmMatchingError, Matching
from include.runtime.warehouse import Warehouse
from tests.crm_servers import HubSpotServer, SalesforceServer, WebhookReceiver, write_identity_map
from tests.plugins.test_crm import operator, push_log, set_conn, sf_id
from tests.published import write_published

D1, D2, D3 = dt.date(2026, 10, 31), dt.date(2026, 11, 7), dt.date(2026, 11, 14)
NAMES = {1: "High-value core", 2: "Loyal potential", 3: "Hibernating"}
FAST = {"backoff_s": 0.05, "max_backoff_s": 1}


@pytest.fixture
def url(tmp_path) -> str:
    return f"duckdb:///{tmp_path / 'crm.duckdb'}"


def publish(url: str, date: dt.date, keys: list[str], seg: list[int], names: dict[int, str] = NAMES) -> None:
    write_published(url, date, keys, np.array(seg), names)


def labels_of(url: str, date: dt.date) -> dict[str, dict]:
    """Customer key -> the label properties HubSpot should hold (as text)."""
    from include.crm.contract import load_labels

    with Warehouse(url) as wh:
        labels = load_labels(wh, date)
    return {r["customer_key"]: {f: (str(r[f]).lower() if isinstance(r[f], bool | np.bool_) else str(r[f]))
                                for f in PUSH_FIELDS} for r in labels.to_dict(orient="records")}


def test_every_contact_of_a_segmented_customer_gets_its_labels_and_nothing_is_created(url, monkeypatch,
                                                                                    airflow_db):
    keys = [f"C{i:015x}" for i in range(40)]
    publish(url, D2, keys, [1 + i % 3 for i in range(40)])
    # The portal: 40 customers' contacts (customers 0-9 have two contacts each, 30-39 none), two contacts of
    # people who are not segmented (leads, never bought), and one id the export lists that HubSpot deleted.
    owners = {str(1000 + i): keys[i] for i in range(30)} | {str(2000 + i): keys[i] for i in range(10)}
    leads = {"5001": "Clead0000000001", "5002": "Clead0000000002"}
    write_identity_map(url, D2, [("hubspot", r, k) for r, k in {**owners, **leads, "7777": keys[35]}.items()]
                       + [("web", f"W{i}", k) for i, k in enumerate(keys)])
    portal = {r: {"email": f"{r}@example.com"} for r in (*owners, *leads)}
    with HubSpotServer(contacts=portal) as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token)
        out = operator("hubspot", url, date=D2, hook_kwargs=FAST).execute({"run_id": "r1"})
        expected = labels_of(url, D2)
        # Every contact of a segmented customer carries its customer's labels; no contact was created.
        assert hub.created == [] and out["created"] == 0 and len(hub.contacts) == len(portal)
        assert {r: {k: p[k] for k in PUSH_FIELDS} for r, p in hub.labelled().items()} == \
            {r: expected[k] for r, k in owners.items()}
        assert not any(hub.contacts[r].get("segment_id") for r in leads)  # not segmented: untouched
        assert out["customers"] == 40 and out["records"] == 41 and out["customers_without_record"] == 9
        assert out["records_without_labels"] == 2
        assert out["acknowledged"] == 40 and out["not_found"] == 1 and out["failed"] == 1  # the deleted contact
        with Warehouse(url) as wh:
            run = wh.query_df("SELECT * FROM crm_push_runs WHERE target = 'hubspot'")
        assert run[["customers_without_record", "created", "not_found"]].iloc[0].tolist() == [9, 0, 1]
        # Exactly once: a re-run sends only the record HubSpot did not know (still unknown, still not created).
        again = operator("hubspot", url, date=D2, hook_kwargs=FAST).execute({"run_id": "r2"})
        assert again["changed"] == 1 and again["not_found"] == 1 and hub.created == []
        assert sum(hub.updates.values()) == 40


def test_salesforce_updates_by_id_and_an_external_id_upsert_creates_nothing(url, monkeypatch, airflow_db):
    keys = [f"C{i:015x}" for i in range(12)]
    publish(url, D2, keys, [1 + i % 3 for i in range(12)])
    ids = {sf_id(i): keys[i] for i in range(10)}
    write_identity_map(url, D2, [("salesforce", r, k) for r, k in ids.items()]
                       + [("salesforce", "003000000000999ZZZ", keys[11]), ("salesforce", "not-an-id", keys[10])]
                       + [("webshop", f"S{i}", k) for i, k in enumerate(keys)])
    org = {r: {"LastName": "Doe", "Shop_Customer_Id__c": f"S{i}"} for i, r in enumerate(ids)}
    with SalesforceServer(records=org) as sf:
        set_conn(monkeypatch, "crm_salesforce", sf.url, sf.token)
        out = operator("salesforce", url, date=D2, hook_kwargs={"poll_interval_s": 0.01}).execute({})
        assert out["acknowledged"] == 10 and out["failed"] == 2 and out["not_found"] == 1  # + one malformed Id
        assert sf.created == [] and len(sf.records) == 10 and set(sf.labelled()) == set(ids)
        failed = [row["sf__Error"] for job in sf.jobs.values() for row in job["failed"]]
        assert sorted(e.split(":")[0] for e in failed) == ["INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID"]
    # Upsert on an external id the business owns (its shop's customer numbers on every Contact): the two
    # customers whose numbers Salesforce does not hold would be created, which fails for the missing LastName.
    with SalesforceServer(records=org) as sf:
        set_conn(monkeypatch, "crm_salesforce", sf.url, sf.token,
                 {"external_id_field": "Shop_Customer_Id__c", "match_source_system": "webshop"})
        out = operator("salesforce", url, date=D2, hook_kwargs={"poll_interval_s": 0.01}).execute({})
        assert {j["operation"] for j in sf.jobs.values()} == {"upsert"}
        assert out["acknowledged"] == 10 and out["not_found"] == 2 and out["created"] == 0 and sf.created == []
        assert set(sf.labelled()) == set(ids)
    # Create mode cannot be switched on for Salesforce (a Contact needs a LastName the push never sends).
    with SalesforceServer(records=org) as sf:
        set_conn(monkeypatch, "crm_salesforce", sf.url, sf.token, {"create_missing": True})
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match="create_missing is not supported"):
            operator("salesforce", url, date=D2).execute({})


def test_an_unloaded_crm_export_fails_once_and_names_the_fix(url, monkeypatch, airflow_db):
    from airflow.sdk.exceptions import AirflowFailException

    keys = [f"C{i:015x}" for i in range(5)]
    publish(url, D2, keys, [1, 2, 3, 1, 2])
    write_identity_map(url, D2, [("web", f"W{i}", k) for i, k in enumerate(keys)])
    with HubSpotServer() as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token)
        with pytest.raises(AirflowFailException, match="no identity record of source_system 'hubspot'.*docs/crm.md"):
            operator("hubspot", url, date=D2).execute({})
        assert hub.requests == [] and hub.created == []
    with pytest.raises(CrmMatchingError, match="create_missing needs"):
        Matching(create_missing=True)
    with pytest.raises(CrmMatchingError, match="on_merge"):
        Matching.for_target("webhook", {"on_merge": "keep"})


def test_create_mode_creates_one_contact_per_unmatched_customer_and_clears_it_once_a_real_one_appears(
        url, monkeypatch, airflow_db):
    keys = [f"C{i:015x}" for i in range(6)]
    publish(url, D2, keys, [1, 2, 3, 1, 2, 3])
    write_identity_map(url, D2, [("hubspot", str(100 + i), keys[i]) for i in range(4)])
    with HubSpotServer(contacts={str(100 + i): {} for i in range(4)}) as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token, {"create_missing": True})
        out = operator("hubspot", url, date=D2, hook_kwargs=FAST).execute({})
        # What create mode sends: batch/upsert by the unique property customer_key with the labels only.
        assert out["created"] == 2 == len(hub.created) and out["customers_without_record"] == 2
        created = {hub.contacts[c]["customer_key"]: hub.contacts[c] for c in hub.created}
        assert set(created) == {keys[4], keys[5]}
        assert set(created[keys[4]]) == {"customer_key", *PUSH_FIELDS}
        # The business's export now lists a contact for customer 4: it gets the labels; the created one is cleared.
        write_identity_map(url, D2, [("hubspot", str(100 + i), keys[i]) for i in range(4)] + [("hubspot", "104", keys[4])])
        hub.contacts["104"] = {}
        again = operator("hubspot", url, date=D2, hook_kwargs=FAST).execute({})
        assert again["created"] == 0 and again["new"] == 1 and again["cleared"] == 1
        assert {f: hub.contacts["104"][f] for f in PUSH_FIELDS} == labels_of(url, D2)[keys[4]]
        assert all(created[keys[4]][f] == "" for f in PUSH_FIELDS) and created[keys[5]]["segment_id"] == "3"


def test_an_email_hash_property_matches_contacts(url, monkeypatch, airflow_db):
    keys = [f"C{i:015x}" for i in range(4)]
    publish(url, D2, keys, [1, 2, 3, 1])
    emails = {"W0": " Ann@Example.com", "W1": "bob@example.com", "A1": "bob.work@example.com", "W2": "cy@example.com",
              "W3": "shared@example.com", "A9": "shared@example.com"}
    owner = {"W0": keys[0], "W1": keys[1], "A1": keys[1], "W2": keys[2], "W3": keys[3], "A9": "Cother000000000"}
    write_identity_map(url, D2, [(s[0], s, owner[s]) for s in emails])
    with Warehouse(url) as wh:
        wh.replace_partition("stg_identity_records", pd.DataFrame({
            "as_of_date": D2, "source_system": [s[0] for s in emails], "source_id": list(emails),
            "email": list(emails.values())}), {"as_of_date": D2})

    def sha(e: str) -> str:
        return hashlib.sha256(e.strip().lower().encode()).hexdigest()

    portal = {str(i): {"email_sha256": sha(e)} for i, e in enumerate(
        ["ann@example.com", "bob@example.com", "bob.work@example.com", "shared@example.com"])}
    with HubSpotServer(contacts=portal) as hub:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token,
                 {"match_key": "email_sha256", "id_property": "email_sha256"})
        out = operator("hubspot", url, date=D2, hook_kwargs=FAST).execute({})
        expected = labels_of(url, D2)
        # Both of customer 1's emails are contacts; customer 2's email is not in HubSpot (not found, not created);
        # the email two customers share is ambiguous and left alone.
        assert out["ambiguous_records"] == 1 and out["not_found"] == 1 and hub.created == []
        assert {c: {f: p[f] for f in PUSH_FIELDS} for c, p in hub.labelled().items()} == {
            "0": expected[keys[0]], "1": expected[keys[1]], "2": expected[keys[1]]}


def test_a_rename_is_counted_as_a_rename_not_a_move(url, monkeypatch, airflow_db):
    keys = [f"C{i:015x}" for i in range(30)]
    seg = [1 + i % 3 for i in range(30)]
    publish(url, D1, keys, seg)
    renamed = {**NAMES, 3: "Lapsed one-time buyers"}  # same segment id 3, new name
    moved = list(seg)
    moved[0], moved[1] = 2, 3  # two customers move (from 1 and 2)
    with WebhookReceiver() as receiver:
        set_conn(monkeypatch, "crm_webhook", receiver.url, receiver.secret)
        first = operator("webhook", url, date=D1, batch_size=7).execute({"run_id": "w1"})
        assert first["new"] == 30 and first["moved"] == first["renamed"] == 0
        operator("outbox", url, date=D1).execute({"run_id": "o1"})
        publish(url, D2, keys, moved, renamed)
        second = operator("webhook", url, date=D2, batch_size=7).execute({"run_id": "w2"})
        outbox = operator("outbox", url, date=D2).execute({"run_id": "o2"})
        # Segment 3 had 10 customers, one more moved into it: 10 renamed, 2 moved; the renamed are delivered.
        for summary in (second, outbox):
            assert (summary["moved"], summary["renamed"], summary["new"], summary["changed"]) == (2, 10, 0, 12)
        names = {r["customer_key"]: r["segment_name"] for recs in receiver.deliveries.values() for r in recs}
        assert sum(n == "Lapsed one-time buyers" for n in names.values()) == 11
    log = push_log(url, "webhook")
    assert log.loc[log["run_id"] == "w2", ["moved", "renamed"]].sum().tolist() == [2, 10]
    with Warehouse(url) as wh:
        runs = wh.query_df("SELECT target, moved, renamed FROM crm_push_runs WHERE as_of_date = :d", {"d": D2})
    assert runs.sort_values("target")[["moved", "renamed"]].to_numpy().tolist() == [[2, 10], [2, 10]]


def write_changes(url: str, rows: list[tuple]) -> None:
    """``identity_changes`` by hand (the identity stage's table: merges and splits per date)."""
    frame = pd.DataFrame(rows, columns=["as_of_date", "change", "customer_key", "survivor_key", "records"])
    with Warehouse(url) as wh:
        wh.run_script("CREATE TABLE IF NOT EXISTS identity_changes (as_of_date DATE, change VARCHAR, "
                      "customer_key VARCHAR, survivor_key VARCHAR, records BIGINT)")
        wh.replace_table("identity_changes", frame)


@pytest.mark.parametrize("changes", ["identity_changes", "derived"])
@pytest.mark.parametrize("on_merge", ["survivor", "clear"])
def test_merges_and_splits_leave_no_label_of_a_vanished_key(url, monkeypatch, airflow_db, changes, on_merge):
    """D1: A, B, C. D2: B merges into A (its web record and HubSpot contact now A's). D3: A splits, B's old
    records move to a new key N. After every push no record carries a label of a key that no longer exists."""
    a, b, c, n = "CA0000000000000", "CB0000000000000", "CC0000000000000", "CN0000000000000"
    weeks = {  # date -> (published customers and segments, identity records)
        D1: ({a: 1, b: 2, c: 3}, {"W1": a, "W2": b, "W3": c, "101": a, "102": b, "103": c}),
        D2: ({a: 1, c: 3}, {"W1": a, "W2": a, "W3": c, "101": a, "102": a, "103": c}),
        D3: ({a: 1, c: 3, n: 2}, {"W1": a, "W2": n, "W3": c, "101": a, "102": n, "103": c}),
    }

    def run_identity_and_publish(date: dt.date) -> None:
        segments, records = weeks[date]
        publish(url, date, list(segments), list(segments.values()))
        write_identity_map(url, date, [("web" if r[0] == "W" else "hubspot", r, k) for r, k in records.items()])
        if changes == "identity_changes":
            write_changes(url, [(D2, "merge", b, a, 2), (D3, "split", a, n, 2)][:[D1, D2, D3].index(date)])
    with HubSpotServer(contacts={"101": {}, "102": {}, "103": {}}) as hub, WebhookReceiver() as receiver:
        set_conn(monkeypatch, "crm_hubspot", hub.url, hub.token)
        set_conn(monkeypatch, "crm_webhook", receiver.url, receiver.secret)

        def push(date: dt.date) -> dict[str, dict]:
            return {t: operator(t, url, date=date, on_merge=on_merge, hook_kwargs=FAST).execute({"run_id": f"{t}{date}"})
                    for t in ("outbox", "webhook", "hubspot")}

        def held() -> dict[str, dict[str, dict]]:
            """Per target, record -> the label fields it holds now."""
            last: dict[str, dict] = {}
            for records in receiver.deliveries.values():
                for r in records:
                    last[r["customer_key"]] = {f: r[f] for f in PUSH_FIELDS}
            with Warehouse(url) as wh:
                outbox = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
            return {"hubspot": {r: {f: p.get(f, "") for f in PUSH_FIELDS} for r, p in hub.contacts.items()},
                    "webhook": last,
                    "outbox": {r: {f: json.loads(p)[f] for f in PUSH_FIELDS}
                               for r, p in zip(outbox["record_id"], outbox["payload"], strict=True)}}

        def assert_no_vanished_label(date: dt.date) -> None:
            current = labels_of(url, date)
            live = {json.dumps(v, sort_keys=True) for v in current.values()}
            for target, records in held().items():
                for record, fields in records.items():
                    text = {f: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
                            for f, v in fields.items()}
                    assert json.dumps(text, sort_keys=True) in live or not any(text.values()), (target, record)

        run_identity_and_publish(D1)
        push(D1)
        assert held()["hubspot"]["102"]["segment_id"] == "2"
        run_identity_and_publish(D2)
        merged = push(D2)
        assert_no_vanished_label(D2)
        # HubSpot: contact 102 now belongs to A and carries A's labels (it followed its customer).
        assert held()["hubspot"]["102"] == held()["hubspot"]["101"] and merged["hubspot"]["merged"] == 1
        # Keyed by customer: B's record gets A's labels (survivor) or is cleared.
        for target in ("webhook", "outbox"):
            record_b = held()[target][b]
            if on_merge == "survivor":
                assert record_b == held()[target][a] and merged[target]["merged"] == 1
            else:
                assert not any(v not in (None, "") for v in record_b.values()) and merged[target]["cleared"] == 1
        # Exactly once: re-running D2 (and the older D1) sends nothing more.
        sent = (len(receiver.deliveries), sum(hub.updates.values()))
        for date in (D2, D1):
            assert all(s["changed"] == 0 for s in push(date).values())
        assert sent == (len(receiver.deliveries), sum(hub.updates.values()))
        run_identity_and_publish(D3)
        split = push(D3)
        assert_no_vanished_label(D3)
        assert held()["hubspot"]["102"]["segment_id"] == "2" and split["hubspot"]["merged"] == 1  # N's labels
        assert held()["webhook"][n]["segment_id"] == 2
        assert hub.created == []
