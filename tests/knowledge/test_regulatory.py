"""Regulatory clocks against hand-computed dates (calendars checked by hand, not by the code under test)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from aiir.errors import BadInput
from aiir.knowledge import regulatory as reg

AWARE = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 EST


def by(ds, regime, word=""):
    out = [d for d in ds if d.regime == regime and word.lower() in d.obligation.lower()]
    assert len(out) == 1, [d.obligation for d in ds if d.regime == regime]
    return out[0]


def utc(*a):
    return datetime(*a, tzinfo=UTC)


def test_gdpr_nis2_nydfs_hours():
    ds = reg.deadlines(AWARE, regimes=["gdpr", "nis2", "nydfs"])
    assert by(ds, "gdpr").due == utc(2026, 11, 27, 15, 0)
    assert by(ds, "nis2", "early warning").due == utc(2026, 11, 25, 15, 0)
    assert by(ds, "nis2", "incident notification").due == utc(2026, 11, 27, 15, 0)
    assert by(ds, "nis2", "final report").due == utc(2026, 12, 24, 15, 0)  # one month, counted from awareness
    assert by(ds, "nydfs").due == utc(2026, 11, 27, 15, 0)
    assert by(ds, "gdpr").basis == "GDPR Art. 33(1)" and "23(4)(a)" in by(ds, "nis2", "early").basis
    assert all(d.due.tzinfo == UTC and d.clock_start.tzinfo == UTC for d in ds)
    assert [d.due for d in ds] == sorted(d.due for d in ds)


def test_nis2_final_report_from_the_actual_notification_clamps_to_month_end():
    ds = reg.deadlines(utc(2027, 1, 29, 9, 0), regimes=["nis2"], nis2_notified_at=utc(2027, 1, 31, 10, 0))
    assert by(ds, "nis2", "final").due == utc(2027, 2, 28, 10, 0)
    ds = reg.deadlines(utc(2028, 1, 30, 9, 0), regimes=["nis2"], nis2_notified_at="2028-01-31T10:00:00Z")
    assert by(ds, "nis2", "final").due == utc(2028, 2, 29, 10, 0)  # leap year
    assert reg.add_months(utc(2026, 12, 15), 1) == utc(2027, 1, 15)


def test_hipaa_sixty_calendar_days_and_annual_hhs_log():
    ds = reg.deadlines(AWARE, regimes=["hipaa"])
    assert by(ds, "hipaa", "affected individuals").due == utc(2027, 1, 23, 15, 0)  # 6 (Nov) + 31 (Dec) + 23 (Jan)
    assert by(ds, "hipaa", "fewer than 500").due == utc(2027, 3, 2)  # end of 1 March 2027
    ds = reg.deadlines(utc(2027, 6, 1), regimes=["hipaa"])
    assert by(ds, "hipaa", "fewer than 500").due == utc(2028, 3, 1)  # 2028 is a leap year: end of 29 Feb


@pytest.mark.parametrize(("determined", "due", "why"), [
    # Tue before Thanksgiving: Wed(1) Thu=holiday Fri(2) Sat Sun Mon(3) Tue(4); 17:30 EST = 22:30 UTC
    (utc(2026, 11, 24, 15, 0), utc(2026, 12, 1, 22, 30), "weekend + Thanksgiving 2026-11-26"),
    # Thu: Fri(1) Sat Sun Mon(2) Tue(3) Wed(4)
    (utc(2026, 3, 5, 15, 0), utc(2026, 3, 11, 21, 30), "weekend; DST began 2026-03-08: 17:30 EDT"),
    # Thu: Fri(1) Mon(2) Tue(3) Wed=Veterans Day Thu(4)
    (utc(2026, 11, 5, 15, 0), utc(2026, 11, 12, 22, 30), "weekend + Veterans Day"),
    # Fri: Sat Sun Mon=Columbus Day Tue(1) Wed(2) Thu(3) Fri(4)
    (utc(2026, 10, 9, 14, 0), utc(2026, 10, 16, 21, 30), "weekend + Columbus Day"),
    # Thu: Fri 3 July = Independence Day observed (4 July is a Saturday); Mon(1) Tue(2) Wed(3) Thu(4)
    (utc(2026, 7, 2, 14, 0), utc(2026, 7, 9, 21, 30), "observed Independence Day"),
    # Wed: Thu(1) Fri 31 Dec = New Year's Day 2022 observed; Mon(2) Tue(3) Wed(4)
    (utc(2021, 12, 29, 15, 0), utc(2022, 1, 5, 22, 30), "New Year's observed in the previous year"),
    # 03:00 UTC Tuesday is 22:00 EST Monday: the determination day is Monday (Eastern)
    (utc(2026, 11, 24, 3, 0), utc(2026, 11, 30, 22, 30), "Eastern calendar day, not UTC"),
    # Sat: Mon(1) Tue(2) Wed(3) Fri(4) (Thanksgiving)
    (utc(2026, 11, 21, 18, 0), utc(2026, 11, 27, 22, 30), "determined on a Saturday"),
])
def test_sec_8k_four_business_days(determined, due, why):
    d = by(reg.deadlines(AWARE - timedelta(days=10), regimes=["sec_8k"], materiality_at=determined), "sec_8k")
    assert d.due == due, why
    assert d.clock_start == determined


def test_sec_8k_extra_closures_and_clock_not_started():
    # National Day of Mourning, Thu 2025-01-09 (executive order): Wed(1) Thu closed Fri(2) Mon(3) Tue(4)
    d = by(reg.deadlines(utc(2025, 1, 7, 15), regimes=["sec"], materiality_at=utc(2025, 1, 7, 15),
                         extra_holidays=[date(2025, 1, 9)]), "sec_8k")
    assert d.due == utc(2025, 1, 14, 22, 30)
    d = by(reg.deadlines(utc(2025, 1, 7, 15), regimes=["sec_8k"], materiality_at=utc(2025, 1, 7, 15)), "sec_8k")
    assert d.due == utc(2025, 1, 13, 22, 30)
    ds = reg.deadlines(AWARE, regimes=["gdpr", "sec_8k"])
    assert ds[-1].regime == "sec_8k" and ds[-1].due is None and ds[-1].clock_start is None
    assert ds[-1].status() == "not started" and ds[-1].to_dict()["due"] is None


@pytest.mark.parametrize(("flags", "days"), [
    ({}, 15), ({"death": True}, 10), ({"widespread": True}, 2), ({"critical_infrastructure": True}, 2),
    ({"death": True, "widespread": True}, 2),
])
def test_eu_ai_act_article_73(flags, days):
    d = by(reg.deadlines(AWARE, regimes=["eu_ai_act"], **flags), "eu_ai_act")
    assert d.due == AWARE + timedelta(days=days)
    assert d.basis.startswith("EU AI Act Art. 73(")


def test_us_federal_holidays_match_opm():
    assert list(reg.us_federal_holidays(2026)) == [
        date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 5, 25), date(2026, 6, 19),
        date(2026, 7, 3), date(2026, 9, 7), date(2026, 10, 12), date(2026, 11, 11), date(2026, 11, 26),
        date(2026, 12, 25)]
    assert list(reg.us_federal_holidays(2027)) == [
        date(2027, 1, 1), date(2027, 1, 18), date(2027, 2, 15), date(2027, 5, 31), date(2027, 6, 18),
        date(2027, 7, 5), date(2027, 9, 6), date(2027, 10, 11), date(2027, 11, 11), date(2027, 11, 25),
        date(2027, 12, 24), date(2027, 12, 31)]  # 1 Jan 2028 is a Saturday
    assert date(2021, 12, 31) in reg.us_federal_holidays(2021)
    assert date(2022, 1, 1) not in reg.us_federal_holidays(2022)


def test_all_regimes_timezones_and_input_errors():
    ds = reg.deadlines(datetime(2026, 11, 24, 16, 0, tzinfo=timezone(timedelta(hours=1))))
    assert {d.regime for d in ds} == set(reg.REGIMES)
    assert by(ds, "gdpr").due == utc(2026, 11, 27, 15, 0)  # +01:00 input, UTC output
    with pytest.raises(BadInput, match="timezone"):
        reg.deadlines(datetime(2026, 11, 24, 15, 0))
    with pytest.raises(BadInput, match="unknown regime"):
        reg.deadlines(AWARE, regimes=["ccpa"])
    with pytest.raises(BadInput):
        reg.deadlines("yesterday")
    assert reg.normalise_regimes(["SEC", "ai_act", "gdpr", "gdpr"]) == ["sec_8k", "eu_ai_act", "gdpr"]


def test_status_and_dict():
    d = by(reg.deadlines(AWARE, regimes=["gdpr"]), "gdpr")
    assert d.status(utc(2026, 11, 25)) == "open" and d.status(utc(2026, 11, 28)) == "overdue"
    doc = d.to_dict(utc(2026, 11, 27, 14, 0))
    assert doc["due"] == "2026-11-27T15:00:00Z" and doc["seconds_left"] == 3600 and doc["status"] == "open"
