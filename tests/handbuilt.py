"""A tiny hand-built CDP dataset whose features are worked out by hand in the tests."""

import datetime as dt

import pandas as pd

AS_OF = dt.date(2026, 1, 31)


def raw_tables() -> dict[str, pd.DataFrame]:
    identity = pd.DataFrame({
        "source_system": ["web", "app", "call_centre", "web"],
        "source_id": ["W1", "A1", "C1", "W2"],
        "first_name": ["ann", "ann", "bob", "cy"],
        "last_name": ["lee", "lee", "ray", "po"],
        "email": ["Ann.Lee@Example.com ", "ann.lee@example.com", None, "not-an-email"],
        "phone": ["+44 7000 000001", None, "07000000002", None],
        "address": ["1 high street"] * 2 + ["2 mill lane", "3 kings road"],
        "postcode": ["N01 001", "N01 001", "S02 002", "E03 003"],
        "date_of_birth": ["1980-01-01", None, "1975-05-05", None],
        "device_id": [None, "dev-1", None, None],
        "region": ["north", "north", "south", "east"],
        "created_at": ["2024-05-01 09:00:00", "2025-01-01 09:00:00", "2024-01-01 09:00:00", "2025-06-01 00:00:00"],
        "loaded_at": ["2024-05-01 10:00:00", "2025-01-01 10:00:00", "2024-01-01 10:00:00", "2025-06-01 01:00:00"],
    })
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4", "o5", "o6", "o7"],
        "source_system": ["web", "web", "app", "app", "web", "call_centre", "web"],
        "source_id": ["W1", "W1", "A1", "A1", "W1", "C1", "W2"],
        "order_ts": ["2024-06-01 12:00:00", "2025-12-01 12:00:00", "2026-01-10 12:00:00",
                     "2026-01-20 12:00:00", "2026-02-05 12:00:00", "2025-03-01 08:00:00", "2025-06-02 00:00:00"],
        "amount": ["20", "100", "50", "30", "999", "60", "-5"],
        "discount": ["0", "10", "0", "0", "0", "0", "0"],
        "returned_amount": ["0", "0", "25", "0", "0", "0", "0"],
        "channel": ["web", "web", "app", "app", "web", "store", "web"],
        "category": ["home"] * 7,
        "loaded_at": ["2024-06-01 13:00:00", "2025-12-01 13:00:00", "2026-01-10 13:00:00",
                      "2026-01-20 13:00:00", "2026-02-05 13:00:00", "2025-03-01 09:00:00", "2025-06-02 01:00:00"],
    })
    support = pd.DataFrame({
        "contact_id": ["s1", "s2", "s3"],
        "source_system": ["web", "app", "web"],
        "source_id": ["W1", "A1", "W1"],
        "contact_ts": ["2025-11-01 10:00:00", "2026-01-05 10:00:00", "2026-02-10 10:00:00"],
        "channel": ["phone", "chat", "phone"],
        "cost": [None, "1.0", None],
        "loaded_at": ["2025-11-01 11:00:00", "2026-01-05 11:00:00", "2026-02-10 11:00:00"],
    })
    usage = pd.DataFrame({
        "source_system": ["app", "app"], "source_id": ["A1", "A1"],
        "usage_date": ["2026-01-01", "2025-09-01"], "sessions": [5, 7],
    })
    email = pd.DataFrame({
        "source_system": ["web"], "source_id": ["W1"], "period_start": ["2025-12-01"],
        "sends": [4], "opens": [2], "clicks": [1],
    })
    subs = pd.DataFrame({
        "source_system": ["web", "web"], "source_id": ["W1", "W1"],
        "plan_tier": ["basic", "premium"], "valid_from": ["2024-01-01", "2026-03-01"],
    })
    return {"raw_identity_records": identity, "raw_orders": orders, "raw_support_contacts": support,
            "raw_product_usage": usage, "raw_email_activity": email, "raw_subscriptions": subs}


#: Customer "ann" (W1 + A1 linked by email) as of AS_OF, worked out by hand.
ANN = {
    "recency_days": 11.0,  # last order 2026-01-20
    "frequency": 3.0,  # o2, o3, o4 in the 365 days up to 2026-01-31 (o5 is after the date)
    "monetary": 155.0,  # 100 + (50 - 25) + 30
    "orders_lifetime": 4.0,
    "revenue_lifetime": 175.0,
    "avg_order_value": 50.0,  # (20 + 100 + 50 + 30) / 4
    "discount_share": 0.25,
    "return_rate": 0.125,  # 25 / 200
    "support_contacts": 2.0,  # s3 is after the date
    "cost_to_serve": 9.5,  # phone at the configured 8.50 + chat at its own 1.00
    "usage_sessions": 5.0,  # 2025-09-01 is outside the 90-day window
    "email_open_rate": 0.5,
    "email_click_rate": 0.25,
    "tenure_days": 640.0,  # first seen 2024-05-01
    "preferred_channel": "app",  # 2 web, 2 app: ties go alphabetically
    "plan_tier": "basic",  # premium starts after the date
    "region": "north",
}
