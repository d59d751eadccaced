//! Which snapshots a retention policy keeps, with restic's semantics so
//! that habits carry over.
//!
//! Snapshots are taken newest first. `last N` keeps the N newest. Each
//! calendar rule (`hourly`, `daily`, `weekly` by ISO week, `monthly`,
//! `yearly`) with count N keeps the newest snapshot of each of the N most
//! recent periods that hold snapshots. `within D` keeps every snapshot
//! taken less than D before the newest one; `within-daily D` and its
//! siblings keep the newest snapshot of every period within D of the
//! newest. `tags` keeps snapshots carrying any of them. A snapshot is kept
//! when any rule keeps it, and every rule that does is named.

use chrono::{DateTime, Datelike, Months, TimeDelta, TimeZone, Timelike};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

/// A calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// A clock hour.
    Hour,
    /// A calendar day.
    Day,
    /// An ISO week.
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Period {
    const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// Which period of this kind `time` falls in.
    fn bucket<Tz: TimeZone>(self, time: &DateTime<Tz>) -> (i32, u32, u32, u32) {
        match self {
            Period::Hour => (time.year(), time.month(), time.day(), time.hour()),
            Period::Day => (time.year(), time.month(), time.day(), 0),
            Period::Week => (time.iso_week().year(), time.iso_week().week(), 0, 0),
            Period::Month => (time.year(), time.month(), 0, 0),
            Period::Year => (time.year(), 0, 0, 0),
        }
    }
}

/// A span of time as restic writes it: `1y2m3d4h` (years, months, days,
/// hours; any may be left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl std::str::FromStr for Span {
    type Err = Error;
    fn from_str(text: &str) -> Result<Span> {
        let bad = || {
            Error::InvalidInput(format!(
                "{text:?} is not a duration: use for example 1y6m, 30d or 12h"
            ))
        };
        let mut span = Span::default();
        let mut number = String::new();
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let n: u32 = number.parse().map_err(|_| bad())?;
            number.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
        }
        if !number.is_empty() || span == Span::default() {
            return Err(bad());
        }
        Ok(span)
    }
}

impl Span {
    /// `time` less this span, by the calendar.
    pub fn before<Tz: TimeZone>(&self, time: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        time.clone()
            .checked_sub_months(Months::new(self.years * 12 + self.months))?
            .checked_sub_signed(TimeDelta::days(i64::from(self.days)))?
            .checked_sub_signed(TimeDelta::hours(i64::from(self.hours)))
    }
}

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    /// The N newest snapshots.
    pub last: Option<u32>,
    /// The newest snapshot of each of the N most recent periods with
    /// snapshots, per period kind.
    pub periods: [Option<u32>; 5],
    /// Every snapshot within this span of the newest.
    pub within: Option<Span>,
    /// The newest snapshot of every period within the span, per kind.
    pub within_periods: [Option<Span>; 5],
    /// Snapshots with any of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// Whether no rule is set (such a policy decides nothing).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.periods.iter().all(Option::is_none)
            && self.within.is_none()
            && self.within_periods.iter().all(Option::is_none)
            && self.tags.is_empty()
    }

    /// Sets the count of a calendar rule.
    pub fn keep(&mut self, period: Period, count: Option<u32>) {
        self.periods[period as usize] = count;
    }

    /// Sets the span of a `within-*` calendar rule.
    pub fn keep_within(&mut self, period: Period, span: Option<Span>) {
        self.within_periods[period as usize] = span;
    }
}

/// What the policy says of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Kept (else forgotten).
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, `within 30d`, `tag x`...).
    pub reasons: Vec<String>,
}

/// Applies `policy` to one group of snapshots, in the time zone `tz`
/// (periods are local calendar periods). Returns a decision per snapshot,
/// newest first.
pub fn apply<Tz: TimeZone>(
    policy: &KeepPolicy,
    group: &[(SnapshotId, Snapshot)],
    tz: &Tz,
) -> Vec<Decision> {
    let mut order: Vec<&(SnapshotId, Snapshot)> = group.iter().collect();
    order.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let time = |s: &Snapshot| {
        tz.timestamp_opt(s.time.secs, s.time.nanos)
            .single()
            .unwrap_or_else(|| tz.timestamp_opt(0, 0).unwrap())
    };
    let Some(newest) = order.first().map(|(_, s)| time(s)) else {
        return Vec::new();
    };
    let mut counts = policy.periods;
    let mut last_bucket: [Option<(i32, u32, u32, u32)>; 5] = [None; 5];
    let mut within_last: [Option<(i32, u32, u32, u32)>; 5] = [None; 5];
    let mut out = Vec::with_capacity(order.len());
    for (n, (id, snapshot)) in order.into_iter().enumerate() {
        let at = time(snapshot);
        let mut reasons = Vec::new();
        if policy.last.is_some_and(|last| (n as u32) < last) {
            reasons.push("last".to_string());
        }
        for period in Period::ALL {
            let i = period as usize;
            let bucket = period.bucket(&at);
            if let Some(left) = counts[i] {
                if left > 0 && last_bucket[i] != Some(bucket) {
                    counts[i] = Some(left - 1);
                    last_bucket[i] = Some(bucket);
                    reasons.push(period.name().to_string());
                }
            }
            if let Some(span) = policy.within_periods[i] {
                let inside = span.before(&newest).is_none_or(|limit| at > limit);
                if inside && within_last[i] != Some(bucket) {
                    within_last[i] = Some(bucket);
                    reasons.push(format!("within-{}", period.name()));
                }
            }
        }
        if let Some(span) = policy.within {
            if span.before(&newest).is_none_or(|limit| at > limit) {
                reasons.push("within".to_string());
            }
        }
        for tag in &policy.tags {
            if snapshot.tags.contains(tag) {
                reasons.push(format!("tag {tag}"));
            }
        }
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests;
