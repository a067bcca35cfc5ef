"""Budgets: per-user and per-group limits on what queries may cost, per day or per month.

Part of the cost family because a budget is the meter turned into a control: its use is `reports.spent`,
the same sums over the same ledger as the Costs page and `sparq costs`, so a budget and the reports can never
disagree. The ask path checks it before the model is called, and a refused query is logged as `over_budget`
at no cost.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.costs.reports import spent
from app.models import Budget
from app.users import UserDirectory
from retrieval.access import Principal

Scope = Literal["user", "group"]
Metric = Literal["usd", "tokens", "joules"]
Period = Literal["day", "month"]
SCOPES: tuple[Scope, ...] = ("user", "group")
METRICS: tuple[Metric, ...] = ("usd", "tokens", "joules")
PERIODS: tuple[Period, ...] = ("day", "month")
UNITS = {"usd": "USD", "tokens": "tokens", "joules": "J"}
SPENT_FIGURE = {"usd": "cost_usd", "tokens": "tokens", "joules": "energy_joules"}  # the CostRollup figure


class BudgetError(ValueError):
    """A budget that cannot be set as asked; the message says why."""


@dataclass(frozen=True)
class BudgetInfo:
    """One budget as set: whose (scope, subject), on what (metric), per what period, and its limit."""

    id: int
    scope: Scope
    subject: str
    metric: Metric
    period: Period
    limit: float

    def describe(self) -> str:
        """The budget in words, e.g. 'group sales: 20 USD per month'."""
        return f"{self.scope} {self.subject}: {self.limit:g} {UNITS[self.metric]} per {self.period}"


@dataclass(frozen=True)
class BudgetUsage:
    """How much of a budget the current period has used."""

    budget: BudgetInfo
    used: float
    period_start: datetime
    period_end: datetime

    @property
    def exhausted(self) -> bool:
        """The period's use has reached the limit: the next query is refused."""
        return self.used >= self.budget.limit

    @property
    def fraction(self) -> float:
        """The share of the limit used (1 for a zero limit)."""
        return self.used / self.budget.limit if self.budget.limit > 0 else 1.0


class OverBudget(RuntimeError):
    """Raised before the model is called when a budget that applies to the asker is spent."""

    def __init__(self, usage: BudgetUsage, now: datetime) -> None:
        b = usage.budget
        self.usage = usage
        self.retry_after_s = max(1, int((usage.period_end - now).total_seconds()))
        whose = "your" if b.scope == "user" else f"group {b.subject!r}'s"
        super().__init__(
            f"{whose} budget of {b.limit:g} {UNITS[b.metric]} per {b.period} is spent "
            f"({usage.used:.6g} used); it resets at {usage.period_end:%Y-%m-%d %H:%M} UTC"
        )


def period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month containing `now`."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def _info(row: Budget) -> BudgetInfo:
    # The columns are plain text, written only by `Budgets.set`, which admits nothing outside these words.
    return BudgetInfo(
        row.id,
        cast(Scope, row.scope),
        row.subject,
        cast(Metric, row.metric),
        cast(Period, row.period),
        row.limit,
    )


class Budgets:
    """Set, list and check budgets; `clock` is injectable so tests can cross a period boundary."""

    def __init__(
        self, engine: Engine, users: UserDirectory, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.engine = engine
        self.users = users
        self.clock = clock

    def set(self, scope: str, subject: str, metric: str, period: str, limit: float) -> BudgetInfo:
        """Create or change the limit for (scope, subject, metric, period)."""
        if scope not in SCOPES:
            raise BudgetError(f"scope must be one of {', '.join(SCOPES)}")
        if metric not in METRICS:
            raise BudgetError(f"metric must be one of {', '.join(METRICS)}")
        if period not in PERIODS:
            raise BudgetError(f"period must be one of {', '.join(PERIODS)}")
        if not subject.strip():
            raise BudgetError("a budget needs a user or group name")
        if not limit >= 0:
            raise BudgetError("a budget's limit must be zero or more")
        with Session(self.engine) as session:
            row = session.scalar(
                select(Budget).where(
                    Budget.scope == scope,
                    Budget.subject == subject,
                    Budget.metric == metric,
                    Budget.period == period,
                )
            )
            if row is None:
                row = Budget(
                    scope=scope, subject=subject.strip(), metric=metric, period=period, limit=float(limit)
                )
                session.add(row)
            else:
                row.limit = float(limit)
            try:
                session.commit()
            except IntegrityError:  # set concurrently: the other writer's row wins, ours updates it
                session.rollback()
                return self.set(scope, subject, metric, period, limit)
            return _info(row)

    def remove(self, budget_id: int) -> None:
        """Delete one budget by its id (BudgetError if there is none)."""
        with Session(self.engine) as session:
            row = session.get(Budget, budget_id)
            if row is None:
                raise BudgetError(f"no budget with id {budget_id}")
            session.delete(row)
            session.commit()

    def list(self) -> list[BudgetInfo]:
        """Every budget, by scope and subject."""
        with Session(self.engine) as session:
            return [_info(r) for r in session.scalars(select(Budget).order_by(Budget.scope, Budget.subject))]

    def usage(self, principal: Principal) -> builtins.list[BudgetUsage]:
        """Every budget that applies to `principal` (their own, and their groups') with its current use."""
        now = self.clock()
        with Session(self.engine) as session:
            rows = session.scalars(select(Budget)).all()
            applying = [
                r
                for r in rows
                if (r.scope == "user" and r.subject == principal.name)
                or (r.scope == "group" and r.subject in principal.groups)
            ]
            if not applying:
                return []
            members = self._members() if any(r.scope == "group" for r in applying) else {}
            result = []
            for r in applying:
                start, end = period_bounds(now, r.period)
                names = [principal.name] if r.scope == "user" else members.get(r.subject, [principal.name])
                result.append(
                    BudgetUsage(_info(r), self._spent(session, names, r.metric, start, end), start, end)
                )
            return result

    def usage_all(self) -> builtins.list[BudgetUsage]:
        """Every budget with its use this period (the admin's view on the Costs page)."""
        now = self.clock()
        members = self._members()
        with Session(self.engine) as session:
            out = []
            for r in session.scalars(select(Budget).order_by(Budget.scope, Budget.subject, Budget.metric)):
                start, end = period_bounds(now, r.period)
                names = [r.subject] if r.scope == "user" else members.get(r.subject, [])
                used = self._spent(session, names, r.metric, start, end) if names else 0.0
                out.append(BudgetUsage(_info(r), used, start, end))
            return out

    def _members(self) -> dict[str, builtins.list[str]]:
        """The user names in each group."""
        members: dict[str, builtins.list[str]] = {}
        for user in self.users.list():
            for group in user.groups:
                members.setdefault(group, []).append(user.name)
        return members

    @staticmethod
    def _spent(
        session: Session, names: builtins.list[str], metric: str, start: datetime, end: datetime
    ) -> float:
        return float(getattr(spent(session, names, start, end), SPENT_FIGURE[metric]))

    def check(self, principal: Principal) -> None:
        """Raises OverBudget when any budget that applies to `principal` is spent for this period."""
        now = self.clock()
        for usage in self.usage(principal):
            if usage.exhausted:
                raise OverBudget(usage, now)
