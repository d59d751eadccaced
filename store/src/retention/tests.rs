//! Policies against a series of snapshots whose kept sets are worked out
//! by hand from restic's documented rules.

use chrono::{NaiveDateTime, Utc};

use super::*;
use crate::id::{BlobId, Id};
use crate::snapshot::SnapshotSource;
use crate::tree::Timestamp;

fn at(text: &str) -> Timestamp {
    let time = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
    Timestamp {
        secs: time.and_utc().timestamp(),
        nanos: 0,
    }
}

/// A snapshot at noon every day of 2024-01-01 .. 2024-03-31, and two more
/// on the last day at 18:00 and 20:00; the one of 2024-01-15 is tagged.
fn series() -> Vec<(SnapshotId, Snapshot)> {
    let mut times: Vec<String> = Vec::new();
    let mut day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    while day <= chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap() {
        times.push(format!("{day} 12:00"));
        day = day.succ_opt().unwrap();
    }
    times.push("2024-03-31 18:00".into());
    times.push("2024-03-31 20:00".into());
    times
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let mut snapshot = Snapshot::new(
                "host",
                vec!["/data".into()],
                BlobId::default(),
                SnapshotSource::Scan,
            );
            snapshot.time = at(text);
            if text.starts_with("2024-01-15") {
                snapshot.tags.push("keep".into());
            }
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            (SnapshotId(Id(id)), snapshot)
        })
        .collect()
}

/// The times of the snapshots `policy` keeps, newest first.
fn kept(policy: &KeepPolicy) -> Vec<String> {
    let group = series();
    apply(policy, &group, &Utc)
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| {
            let snapshot = &group.iter().find(|(id, _)| *id == d.id).unwrap().1;
            chrono::DateTime::from_timestamp(snapshot.time.secs, 0)
                .unwrap()
                .format("%m-%d %H:%M")
                .to_string()
        })
        .collect()
}

fn policy(set: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
    let mut policy = KeepPolicy::default();
    set(&mut policy);
    policy
}

#[test]
fn each_rule_keeps_what_restic_would() {
    let cases: Vec<(&str, KeepPolicy, Vec<&str>)> = vec![
        (
            "last 3",
            policy(|p| p.last = Some(3)),
            vec!["03-31 20:00", "03-31 18:00", "03-31 12:00"],
        ),
        (
            "hourly 2",
            policy(|p| p.keep(Period::Hour, Some(2))),
            vec!["03-31 20:00", "03-31 18:00"],
        ),
        (
            "daily 3",
            policy(|p| p.keep(Period::Day, Some(3))),
            vec!["03-31 20:00", "03-30 12:00", "03-29 12:00"],
        ),
        // 2024-03-31 is a Sunday: ISO week 13 is 03-25..03-31, week 12 ends 03-24.
        (
            "weekly 2",
            policy(|p| p.keep(Period::Week, Some(2))),
            vec!["03-31 20:00", "03-24 12:00"],
        ),
        (
            "monthly 2",
            policy(|p| p.keep(Period::Month, Some(2))),
            vec!["03-31 20:00", "02-29 12:00"],
        ),
        (
            "yearly 5",
            policy(|p| p.keep(Period::Year, Some(5))),
            vec!["03-31 20:00"],
        ),
        (
            "within 2d",
            policy(|p| p.within = Some("2d".parse().unwrap())),
            vec!["03-31 20:00", "03-31 18:00", "03-31 12:00", "03-30 12:00"],
        ),
        (
            "within-daily 3d",
            policy(|p| p.keep_within(Period::Day, Some("3d".parse().unwrap()))),
            vec!["03-31 20:00", "03-30 12:00", "03-29 12:00"],
        ),
        (
            "daily 2, weekly 2, monthly 1",
            policy(|p| {
                p.keep(Period::Day, Some(2));
                p.keep(Period::Week, Some(2));
                p.keep(Period::Month, Some(1));
            }),
            vec!["03-31 20:00", "03-30 12:00", "03-24 12:00"],
        ),
        (
            "tag keep",
            policy(|p| p.tags = vec!["keep".into()]),
            vec!["01-15 12:00"],
        ),
        (
            "within 1y2m",
            policy(|p| p.within = Some("1y2m".parse().unwrap())),
            {
                let mut all: Vec<&str> = Vec::new();
                all.resize(93, "");
                all
            },
        ),
    ];
    for (name, policy, want) in cases {
        let got = kept(&policy);
        if name == "within 1y2m" {
            assert_eq!(got.len(), want.len(), "{name}");
        } else {
            assert_eq!(got, want, "{name}");
        }
    }
}

#[test]
fn reasons_name_every_rule_that_keeps_a_snapshot() {
    let group = series();
    let policy = policy(|p| {
        p.last = Some(1);
        p.keep(Period::Day, Some(1));
        p.keep(Period::Month, Some(1));
        p.tags = vec!["keep".into()];
    });
    let decisions = apply(&policy, &group, &Utc);
    assert_eq!(decisions[0].reasons, ["last", "daily", "monthly"]);
    assert_eq!(decisions.iter().filter(|d| d.keep).count(), 2);
    assert!(decisions.iter().any(|d| d.reasons == ["tag keep"]));
    assert!(KeepPolicy::default().is_empty());
}

#[test]
fn spans_parse_like_restic() {
    assert_eq!(
        "1y2m3d4h".parse::<Span>().unwrap(),
        Span {
            years: 1,
            months: 2,
            days: 3,
            hours: 4
        }
    );
    assert!("".parse::<Span>().is_err());
    assert!("5".parse::<Span>().is_err());
    assert!("3w".parse::<Span>().is_err());
}
