"""Cron expressions with cron's meaning, on APScheduler's ``CronTrigger`` (pure, no I/O).

Used by the scheduler (``schedule.cron``, the CronJob's expression) and by the ArgoCD client
(AppProject sync windows, robfig/cron's 5-field standard schedules).
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC_PART = re.compile(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?")


def _cron_days(field: str) -> str:
    """cron's day-of-week field (0 or 7 = Sunday) -> APScheduler's, spelled with day names.

    APScheduler 3.x counts 0 as Monday, so ``CronTrigger.from_crontab("0 6 * * 1")`` fires on
    Tuesdays (its docstring's warning, issue 286); names mean the same in both.
    """
    if field == "*":
        return field
    out: list[str] = []
    for part in field.split(","):
        match = _NUMERIC_PART.fullmatch(part)
        if match is None:
            out.append(part.lower())  # names (mon-fri) mean the same to APScheduler
            continue
        start, end, step = match.groups()
        low = 0 if start == "*" else int(start)
        high = 7 if start == "*" or (step and end is None) else int(end or start)
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high):
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days = sorted({d % 7 for d in range(low, high + 1, int(step or 1))})
        out.extend(_DAY_NAMES[d] for d in days)
    return ",".join(dict.fromkeys(out))


def crontab_trigger(expr: str, timezone: str) -> CronTrigger:
    """A trigger that fires when cron (and the Kubernetes CronJob) would for ``expr``.

    ``ValueError`` for an expression cron and APScheduler would read differently: both a
    day-of-month and a day-of-week restriction (cron fires on either, APScheduler on both).
    """
    expr = _MACROS.get(expr.strip().lower(), expr)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r}: a cron expression has 5 fields, got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    if day != "*" and day_of_week != "*":
        raise ValueError(
            f"{expr!r}: restrict either the day of month or the day of week, not both "
            "(cron fires when either matches, APScheduler only when both do)"
        )
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_days(day_of_week),
        timezone=ZoneInfo(timezone),
    )
