"""Phone numbers to E.164 under a configurable default country; dates of birth in several shapes."""

import datetime as dt

import pandas as pd
import pytest

from include.identity.normalise import date_text_for_linkage, normalise_date, normalise_phone


@pytest.mark.parametrize(("country", "written", "e164"), [
    ("GB", ["+44 7700 900123", "07700 900123", "0044 7700 900123", "(07) 700900123", "447700900123",
            "+44 (0)7700 900123", "07700-900-123 ext. 12"], "+447700900123"),
    ("GB", ["020 7946 0958", "+44 20 7946 0958"], "+442079460958"),
    ("US", ["(212) 555-0123", "212.555.0123", "1-212-555-0123", "+1 212 555 0123", "001 212 555 0123"],
     "+12125550123"),
    ("DE", ["030 1234567", "+49 30 1234567", "0049 (0)30 1234567", "+49 030 1234567"], "+49301234567"),
    ("DE", ["0151 23456789", "+49 151 23456789"], "+4915123456789"),
    ("FR", ["06 12 34 56 78", "06.12.34.56.78", "+33 6 12 34 56 78", "0033 612345678"], "+33612345678"),
])
def test_every_way_of_writing_a_number_gives_one_e164(country, written, e164):
    assert normalise_phone(pd.Series(written), country).tolist() == [e164] * len(written)


def test_international_numbers_keep_their_own_country_whatever_the_default():
    out = normalise_phone(pd.Series(["+1 212 555 0123", "+33 6 12 34 56 78", "011 44 7700 900123"]), "US")
    assert out.tolist() == ["+12125550123", "+33612345678", "+447700900123"]
    out = normalise_phone(pd.Series(["+1 212 555 0123", "0033 6 12 34 56 78"]), "GB")
    assert out.tolist() == ["+12125550123", "+33612345678"]


def test_a_national_number_depends_on_the_default_country():
    written = pd.Series(["0612345678"])
    assert normalise_phone(written, "FR").tolist() == ["+33612345678"]
    assert normalise_phone(written, "DE").tolist() == ["+49612345678"]
    assert normalise_phone(written, "US").isna().all()  # 10 digits starting 0: no NANP number


def test_non_numbers_become_null():
    out = normalise_phone(pd.Series(["12", "", "   ", None, "call me", "+44 12", "0" * 20]), "GB")
    assert out.isna().all()


def test_unknown_country_is_refused_by_name():
    with pytest.raises(ValueError, match="phone_country 'XX'"):
        normalise_phone(pd.Series(["0123"]), "XX")


def test_dates_of_birth_parse_from_dates_iso_and_yyyymmdd():
    out = normalise_date(pd.Series([dt.date(1980, 1, 31), "1980-01-31", "19800131", " 19800131 ", "1980/01/31",
                                    "31/01/1980", "19801331", "", None], dtype=object))
    assert out.tolist()[:5] == ["1980-01-31"] * 5
    assert out.isna().tolist()[5:] == [True] * 4  # ambiguous day-first, impossible month, empty
    stamps = normalise_date(pd.Series(pd.to_datetime(["1980-01-31", None])))
    assert stamps.tolist()[0] == "1980-01-31" and stamps.isna().tolist()[1]


def test_date_text_for_linkage_keeps_year_first_text_that_is_no_date():
    out = date_text_for_linkage(pd.Series(["19450493", " 1980-13-40 ", "1980/02/31", "31/01/1980", "1945049",
                                           "19a50493", "", None], dtype=object))
    assert out.tolist()[:3] == ["1945-04-93", "1980-13-40", "1980-02-31"]
    # Day- or month-first text is ambiguous; other lengths and letters are no keyed date.
    assert out.isna().tolist()[3:] == [True] * 5


def test_phone_country_setting_offers_exactly_the_known_countries():
    from include.identity.normalise import PHONE_COUNTRIES
    from include.runtime.settings import BY_NAME

    assert BY_NAME["phone_country"].schema["enum"] == list(PHONE_COUNTRIES)
