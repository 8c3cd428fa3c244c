"""Regulatory clocks: who must be told what, by when, once an AI incident is known.

:func:`deadlines` turns the moment the organisation became aware of an incident (and, for the SEC, the
moment it determined the incident material) into timezone-aware UTC deadlines, one per obligation:

==========  ===================================================  =============================================
regime      obligation                                           clock
==========  ===================================================  =============================================
gdpr        notify the supervisory authority (Art. 33(1))        72 h after awareness
nis2        early warning to the CSIRT/authority (Art. 23(4)a)   24 h after awareness
nis2        incident notification (Art. 23(4)b)                  72 h after awareness
nis2        final report (Art. 23(4)d)                           1 month after the incident notification
hipaa       notify individuals (45 CFR 164.404(b))               ≤ 60 calendar days after discovery
hipaa       notify HHS of breaches < 500 people (164.408(c))     ≤ 60 days after the end of the calendar year
sec_8k      Form 8-K Item 1.05                                   4 business days after the materiality
                                                                 determination (weekends and US federal
                                                                 holidays skipped; 17:30 America/New_York)
nydfs       notify the superintendent (23 NYCRR 500.17(a)(1))    72 h after determining that a reportable
                                                                 cybersecurity incident occurred
eu_ai_act   serious-incident report (Art. 73(2)-(4))             15 days; 10 days if a person died; 2 days
                                                                 for a widespread infringement or a serious,
                                                                 irreversible disruption of critical
                                                                 infrastructure (Art. 3(49)(b))
==========  ===================================================  =============================================

Every clock here is an outer limit: each text also says "without undue delay" / "as promptly as
possible" / "immediately". Which regimes apply (and whether an AI incident is a personal-data breach, a
significant incident, a serious incident ...) is a legal judgement this module does not make; it
only does the date arithmetic, conservatively (when a clock's start is unknown, the earliest possible
start is used and the note says so). Federal holidays follow 5 U.S.C. 6103 with the observed-date rule
(Saturday → Friday, Sunday → Monday) for years from 2021 (Juneteenth); one-off closures by executive
order (days of mourning, extra Christmas Eves) are not predictable — pass them as ``extra_holidays``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiir.errors import BadInput

EASTERN = ZoneInfo("America/New_York")
EDGAR_DAY_END = time(17, 30)  # Regulation S-T Rule 13(a): later submissions are dated the next business day

REGIMES: dict[str, str] = {
    "gdpr": "GDPR — Regulation (EU) 2016/679",
    "nis2": "NIS2 — Directive (EU) 2022/2555",
    "hipaa": "HIPAA Breach Notification Rule — 45 CFR 164 Subpart D",
    "sec_8k": "SEC Form 8-K Item 1.05 (cybersecurity incidents)",
    "nydfs": "NYDFS Cybersecurity Regulation — 23 NYCRR Part 500",
    "eu_ai_act": "EU AI Act — Regulation (EU) 2024/1689",
}
_ALIASES = {"sec": "sec_8k", "8k": "sec_8k", "8-k": "sec_8k", "form_8k": "sec_8k", "ai_act": "eu_ai_act",
            "euaiact": "eu_ai_act", "eu-ai-act": "eu_ai_act", "23nycrr500": "nydfs"}


@dataclass(frozen=True)
class Deadline:
    regime: str            # key of REGIMES
    obligation: str        # what has to be done, and for whom
    clock_start: datetime | None  # UTC; None when the triggering event has not happened yet
    due: datetime | None   # UTC; None when the clock has not started
    basis: str             # citation
    notes: str = ""
    clock_trigger: str = ""  # the event that starts the clock

    def remaining(self, now: datetime | None = None) -> timedelta | None:
        if self.due is None:
            return None
        return self.due - (_utc(now, "now") if now else datetime.now(UTC))

    def status(self, now: datetime | None = None) -> str:
        """``not started``, ``overdue`` or ``open``."""
        left = self.remaining(now)
        if left is None:
            return "not started"
        return "overdue" if left.total_seconds() < 0 else "open"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        left = self.remaining(now)
        return {
            "regime": self.regime, "regime_name": REGIMES.get(self.regime, self.regime),
            "obligation": self.obligation, "clock_trigger": self.clock_trigger,
            "clock_start": _iso(self.clock_start), "due": _iso(self.due), "basis": self.basis, "notes": self.notes,
            "status": self.status(now), "seconds_left": None if left is None else int(left.total_seconds()),
        }


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(value: datetime | str, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadInput(where, f"expected an ISO-8601 time such as 2026-11-24T15:00:00Z, got {value!r}") from None
    if not isinstance(value, datetime):
        raise BadInput(where, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadInput(where, f"{value.isoformat()} has no timezone; give an aware datetime (e.g. UTC)")
    return value.astimezone(UTC)


def normalise_regimes(regimes: Iterable[str] | None) -> list[str]:
    if regimes is None:
        return list(REGIMES)
    if isinstance(regimes, str):
        regimes = [regimes]
    out: list[str] = []
    for r in regimes:
        key = str(r).strip().lower().replace(" ", "_")
        key = _ALIASES.get(key, key)
        if key not in REGIMES:
            raise BadInput("regimes", f"unknown regime {r!r} (known: {', '.join(REGIMES)})")
        if key not in out:
            out.append(key)
    return out


# ------------------------------------------------------------------------------- calendar arithmetic
def add_months(dt: datetime, months: int) -> datetime:
    """Same day-of-month ``months`` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    y, m = divmod(dt.month - 1 + months, 12)
    year, month = dt.year + y, m + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """n-th (1-based) ``weekday`` (Mon=0) of the month; n=-1 for the last."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(d: date) -> date:
    if d.weekday() == 5:
        return d - timedelta(days=1)
    if d.weekday() == 6:
        return d + timedelta(days=1)
    return d


def _legal_holidays(year: int) -> list[tuple[date, str]]:
    out = [
        (date(year, 1, 1), "New Year's Day"),
        (_nth_weekday(year, 1, 0, 3), "Birthday of Martin Luther King, Jr."),
        (_nth_weekday(year, 2, 0, 3), "Washington's Birthday"),
        (_nth_weekday(year, 5, 0, -1), "Memorial Day"),
        (date(year, 7, 4), "Independence Day"),
        (_nth_weekday(year, 9, 0, 1), "Labor Day"),
        (_nth_weekday(year, 10, 0, 2), "Columbus Day"),
        (date(year, 11, 11), "Veterans Day"),
        (_nth_weekday(year, 11, 3, 4), "Thanksgiving Day"),
        (date(year, 12, 25), "Christmas Day"),
    ]
    if year >= 2021:
        out.append((date(year, 6, 19), "Juneteenth National Independence Day"))
    return out


def us_federal_holidays(year: int) -> dict[date, str]:
    """The days federal offices (and EDGAR) are closed in ``year`` under 5 U.S.C. 6103, observed dates.

    A holiday on a Saturday is observed the Friday before, on a Sunday the Monday after — so New Year's
    Day 2022 (a Saturday) closes Friday 2021-12-31, which belongs to 2021's list.
    """
    out: dict[date, str] = {}
    for y in (year - 1, year, year + 1):
        for d, name in _legal_holidays(y):
            obs = _observed(d)
            if obs.year == year:
                out[obs] = name + (" (observed)" if obs != d else "")
    return dict(sorted(out.items()))


def is_business_day(d: date, extra_holidays: Iterable[date] = ()) -> bool:
    return d.weekday() < 5 and d not in us_federal_holidays(d.year) and d not in set(extra_holidays)


def add_business_days(start: date, n: int, extra_holidays: Iterable[date] = ()) -> date:
    """The n-th business day after ``start`` (``start`` itself is day 0 whatever it is)."""
    extra = set(extra_holidays)
    d = start
    while n > 0:
        d += timedelta(days=1)
        if is_business_day(d, extra):
            n -= 1
    return d


# ------------------------------------------------------------------------------- the clocks
def deadlines(aware_at: datetime | str, *, regimes: Sequence[str] | None = None,
              materiality_at: datetime | str | None = None, death: bool = False, widespread: bool = False,
              critical_infrastructure: bool = False, nis2_notified_at: datetime | str | None = None,
              extra_holidays: Iterable[date] = ()) -> list[Deadline]:
    """Every deadline of ``regimes`` (default: all), sorted by due time (clocks not started last).

    ``aware_at``: when the organisation became aware of (discovered, determined) the incident.
    ``materiality_at``: when the registrant determined the incident material (SEC only).
    ``death``, ``widespread``, ``critical_infrastructure``: EU AI Act Art. 73 shorter clocks.
    ``nis2_notified_at``: when the NIS2 incident notification was actually submitted, if it was.
    """
    aware = _utc(aware_at, "aware_at")
    keys = normalise_regimes(regimes)
    out: list[Deadline] = []
    if "gdpr" in keys:
        out.append(Deadline(
            "gdpr", "Notify the competent supervisory authority of the personal-data breach",
            aware, aware + timedelta(hours=72), "GDPR Art. 33(1)",
            "Without undue delay and, where feasible, within 72 h; a later notification must give the reasons "
            "for the delay, and information may be provided in phases (Art. 33(4)). Data subjects are told "
            "without undue delay when the risk to them is high (Art. 34). A processor tells the controller "
            "without undue delay (Art. 33(2)). Applies only if personal data were affected.",
            "awareness of the breach"))
    if "nis2" in keys:
        out.append(Deadline(
            "nis2", "Early warning to the CSIRT or competent authority", aware, aware + timedelta(hours=24),
            "NIS2 Art. 23(4)(a)",
            "Say whether the significant incident is suspected to be unlawful or malicious and whether it "
            "could have a cross-border impact.", "awareness of the significant incident"))
        out.append(Deadline(
            "nis2", "Incident notification to the CSIRT or competent authority", aware,
            aware + timedelta(hours=72), "NIS2 Art. 23(4)(b)",
            "Update the early warning; initial assessment of severity and impact, indicators of compromise.",
            "awareness of the significant incident"))
        if nis2_notified_at is not None:
            base = _utc(nis2_notified_at, "nis2_notified_at")
            note = "Computed from the submission of the incident notification."
        else:
            base = aware
            note = ("Counted from awareness, the earliest the incident notification can be submitted, so this "
                    "date is never late; once it is submitted, recompute with nis2_notified_at.")
        out.append(Deadline(
            "nis2", "Final report (or progress report if the incident is still ongoing)", base,
            add_months(base, 1), "NIS2 Art. 23(4)(d)-(e)",
            note + " Detailed description, root cause or threat type, mitigations applied and ongoing, "
                   "cross-border impact. An intermediate report is due on request (Art. 23(4)(c)).",
            "submission of the incident notification"))
    if "hipaa" in keys:
        out.append(Deadline(
            "hipaa", "Notify affected individuals (media too if > 500 residents of a State; HHS at the same "
                     "time if ≥ 500 people)", aware, aware + timedelta(days=60),
            "45 CFR 164.404(b), 164.406, 164.408(b)",
            "Without unreasonable delay and in no case later than 60 calendar days after discovery; discovery "
            "is the first day the breach is known, or would have been known with reasonable diligence "
            "(164.404(a)(2)). A business associate notifies the covered entity within the same limit "
            "(164.410). Applies only to unsecured protected health information.",
            "discovery of the breach"))
        year_end = datetime(aware.year + 1, 1, 1, tzinfo=UTC)
        out.append(Deadline(
            "hipaa", "Notify HHS of breaches affecting fewer than 500 individuals (annual log)", year_end,
            year_end + timedelta(days=60), "45 CFR 164.408(c)",
            "Only for breaches of fewer than 500 people; larger breaches go to HHS with the individual notices.",
            "end of the calendar year of discovery"))
    if "sec_8k" in keys:
        basis = "Form 8-K Item 1.05 and General Instruction B.1; Regulation S-T Rule 13(a)"
        if materiality_at is None:
            out.append(Deadline(
                "sec_8k", "File Form 8-K Item 1.05 (material cybersecurity incident)", None, None, basis,
                "The clock starts when the registrant determines the incident is material; that determination "
                "must be made without unreasonable delay after discovery (Item 1.05, Instruction 1). Delay is "
                "possible only on the U.S. Attorney General's written national-security/public-safety "
                "determination (Item 1.05(c)).", "materiality determination"))
        else:
            det = _utc(materiality_at, "materiality_at")
            det_day = det.astimezone(EASTERN).date()
            due_day = add_business_days(det_day, 4, extra_holidays)
            due = datetime.combine(due_day, EDGAR_DAY_END, tzinfo=EASTERN).astimezone(UTC)
            skipped = [f"{d.isoformat()} {name}" for d in _days_between(det_day, due_day)
                       for name in [us_federal_holidays(d.year).get(d)] if name]
            out.append(Deadline(
                "sec_8k", "File Form 8-K Item 1.05 (material cybersecurity incident)", det, due, basis,
                f"Four business days after the determination (made on {det_day.isoformat()} Eastern); weekends "
                "and federal holidays are not business days"
                + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
                + ". Due 17:30 ET, the end of the EDGAR filing day. Delay only on the U.S. Attorney General's "
                  "written determination (Item 1.05(c)).", "materiality determination"))
    if "nydfs" in keys:
        out.append(Deadline(
            "nydfs", "Notify the NYDFS superintendent (electronically)", aware, aware + timedelta(hours=72),
            "23 NYCRR 500.17(a)(1)",
            "As promptly as possible and no later than 72 h after determining that a reportable cybersecurity "
            "incident occurred at the covered entity, an affiliate or a third-party service provider "
            "(awareness is used as that determination). Extortion payments: notice within 24 h of paying, "
            "written justification within 30 days (500.17(c)).", "determination that a reportable incident occurred"))
    if "eu_ai_act" in keys:
        if widespread or critical_infrastructure:
            days, why = 2, ("widespread infringement" if widespread else
                            "serious and irreversible disruption of critical infrastructure (Art. 3(49)(b))")
            basis = "EU AI Act Art. 73(3)"
        elif death:
            days, why, basis = 10, "death of a person", "EU AI Act Art. 73(4)"
        else:
            days, why, basis = 15, "serious incident", "EU AI Act Art. 73(2)"
        out.append(Deadline(
            "eu_ai_act", "Report the serious incident to the market surveillance authority", aware,
            aware + timedelta(days=days), basis,
            f"{days} days: {why}. Report immediately once a causal link (or its reasonable likelihood) between "
            "the high-risk AI system and the incident is established; an incomplete initial report may be "
            "followed by a complete one (Art. 73(5)). Applies to providers (and deployers, Art. 26(5)) of "
            "high-risk AI systems; check the Act's application dates (Art. 113).",
            "awareness of the serious incident"))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda d: d.due or far)


def _days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range(1, (end - start).days + 1)]
