"""When a series or a study is complete: quiet periods, expected counts, grace, timeout.

A series is complete once nothing arrived for its quiet period, or sooner, once the count its
data announced is reached and nothing more came within the grace. With an announced count not
reached, it waits (the sender may be slow) up to the maximum and then completes as
``timeout-incomplete``. A study is complete once all its series are and the study was quiet for
its own quiet period (only the grace when every series reached its announced count).
Counts a PACS announced for a retrieved study (services/arrival/expected.py) also hold the study
open until every series it listed and its total have arrived; once the total is there, series
without a count of their own complete after the grace too. The decisions are pure: the sweeper
runs them inside a compare-and-set on the stored progress.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fiona_common.messages import (
    CompletionReason,
    SeriesComplete,
    SeriesCount,
    StudyComplete,
)
from services.arrival.progress import (
    SeriesProgress,
    Status,
    StudyProgress,
    is_announced,
    post_event,
)

Reason = CompletionReason


@dataclass(frozen=True)
class Policy:
    """Timing rules (``ARRIVAL.*`` settings); per-site (project) beats per-AE beats global."""

    quiet_seconds: float = 15.0
    study_quiet_seconds: float | None = None  # None: the series' quiet period
    grace_seconds: float = 2.0
    max_open_seconds: float = 3600.0
    quiet_seconds_by_aet: dict[str, float] = field(default_factory=dict)
    quiet_seconds_by_site: dict[str, float] = field(default_factory=dict)

    def series_quiet(self, site: str, calling_aet: str) -> timedelta:
        seconds = self.quiet_seconds_by_site.get(
            site, self.quiet_seconds_by_aet.get(calling_aet, self.quiet_seconds)
        )
        return timedelta(seconds=seconds)

    def study_quiet(self, study: StudyProgress) -> timedelta:
        if self.study_quiet_seconds is not None and study.site not in self.quiet_seconds_by_site:
            return timedelta(seconds=self.study_quiet_seconds)
        return max(
            (self.series_quiet(study.site, s.calling_aet) for s in study.series.values()),
            default=timedelta(seconds=self.quiet_seconds),
        )

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.grace_seconds)

    @property
    def max_open(self) -> timedelta:
        return timedelta(seconds=self.max_open_seconds)


def decide(study: StudyProgress, policy: Policy, now: datetime) -> StudyProgress | None:
    """The study with every completion that is due at ``now`` (events in its outbox); None if
    nothing is due."""
    if study.status is Status.COMPLETE or not study.series:
        return None
    study = study.model_copy(deep=True)
    changed = False
    for uid, series in study.series.items():
        if series.status is Status.OPEN:
            reason = _series_reason(study, uid, series, policy, now)
            if reason is not None:
                _complete_series(study, uid, series, reason, now)
                changed = True
    reason = _study_reason(study, policy, now)
    if reason is not None:
        _complete_study(study, reason, now)
        changed = True
    return study if changed else None


def _series_reason(
    study: StudyProgress, uid: str, series: SeriesProgress, policy: Policy, now: datetime
) -> Reason | None:
    if study.force:
        return Reason.FORCED
    quiet_for = now - series.last_at
    expected = study.expected.get(uid)
    if expected is not None and series.count >= expected.count and quiet_for >= policy.grace:
        return Reason.EXPECTED_COUNT
    if expected is None and total_reached(study) and quiet_for >= policy.grace:
        return Reason.EXPECTED_COUNT
    short = expected is not None and series.count < expected.count
    if not short and quiet_for >= policy.series_quiet(study.site, series.calling_aet):
        return Reason.QUIET
    if now - series.opened_at >= policy.max_open or now - study.opened_at >= policy.max_open:
        return Reason.TIMEOUT_INCOMPLETE
    return None


def _study_reason(study: StudyProgress, policy: Policy, now: datetime) -> Reason | None:
    if any(s.status is Status.OPEN for s in study.series.values()):
        return None
    reasons = {s.reason for s in study.series.values()}
    if study.force:
        return Reason.FORCED
    if Reason.TIMEOUT_INCOMPLETE in reasons:
        return Reason.TIMEOUT_INCOMPLETE
    if announced_short(study):  # the PACS has more to send: wait for it, up to the maximum
        return Reason.TIMEOUT_INCOMPLETE if now - study.opened_at >= policy.max_open else None
    if reasons == {Reason.EXPECTED_COUNT}:
        return Reason.EXPECTED_COUNT if now - study.last_at >= policy.grace else None
    if now - study.last_at >= policy.study_quiet(study):
        return Reason.QUIET
    if now - study.opened_at >= policy.max_open:
        return Reason.TIMEOUT_INCOMPLETE
    return None


def _complete_series(
    study: StudyProgress, uid: str, series: SeriesProgress, reason: Reason, now: datetime
) -> None:
    series.status, series.reason = Status.COMPLETE, reason
    series.revision += 1
    expected = study.expected.get(uid)
    event = SeriesComplete(
        site=study.site,
        study_uid=study.study_uid,
        series_uid=uid,
        revision=series.revision,
        num_files=series.count,
        expected=expected.count if expected else None,
        reason=reason,
        calling_aet=series.calling_aet,
        first_received_at=series.first_at,
        last_received_at=series.last_at,
        completed_at=now,
    )
    post_event(study, event)


def _complete_study(study: StudyProgress, reason: Reason, now: datetime) -> None:
    study.status, study.reason, study.completed_at = Status.COMPLETE, reason, now
    study.revision += 1
    study.force = False
    counts = [
        SeriesCount(
            series_uid=uid,
            num_files=s.count,
            expected=study.expected[uid].count if uid in study.expected else None,
            reason=s.reason or Reason.QUIET,
        )
        for uid, s in sorted(study.series.items())
    ]
    event = StudyComplete(
        site=study.site,
        study_uid=study.study_uid,
        revision=study.revision,
        num_files=study.num_files,
        series=counts,
        reason=reason,
        incomplete=announced_short(study)
        or any(c.expected is not None and c.num_files < c.expected for c in counts),
        calling_aets=sorted({s.calling_aet for s in study.series.values()}),
        first_received_at=study.first_at,
        last_received_at=study.last_at,
        completed_at=now,
    )
    post_event(study, event)


def next_deadline(study: StudyProgress, policy: Policy) -> datetime | None:
    """The earliest moment :func:`decide` will find something due (None: nothing pending).

    Mirrors the rules above, so that a sweeper waking at this moment finds work.
    """
    if study.status is Status.COMPLETE or not study.series:
        return None
    if study.force:
        return study.opened_at
    moments = [study.opened_at + policy.max_open]
    open_series = [(u, s) for u, s in study.series.items() if s.status is Status.OPEN]
    for uid, s in open_series:
        expected = study.expected.get(uid)
        if expected is not None and s.count >= expected.count:
            moments.append(s.last_at + policy.grace)
        if expected is None and total_reached(study):
            moments.append(s.last_at + policy.grace)
        if expected is None or s.count >= expected.count:
            moments.append(s.last_at + policy.series_quiet(study.site, s.calling_aet))
        moments.append(s.opened_at + policy.max_open)
    if not open_series and not announced_short(study):
        if {s.reason for s in study.series.values()} == {Reason.EXPECTED_COUNT}:
            moments.append(study.last_at + policy.grace)
        moments.append(study.last_at + policy.study_quiet(study))
    return min(moments)


def announced_short(study: StudyProgress) -> bool:
    """A PACS announced a series that has not begun to arrive, or more instances in all."""
    missing = any(is_announced(e) and uid not in study.series for uid, e in study.expected.items())
    total = study.expected_total
    return missing or (total is not None and study.num_files < total.count)


def total_reached(study: StudyProgress) -> bool:
    """Everything a PACS announced for the study (its total) has arrived."""
    return study.expected_total is not None and not announced_short(study)
