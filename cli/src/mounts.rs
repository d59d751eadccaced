//! What is mounted where, from /proc/self/mountinfo.

use std::path::{Path, PathBuf};

/// A file system mounted somewhere.
pub struct ExistingMount {
    /// Its type (`fuse.mapache`, `ext4`, ...).
    pub fstype: String,
    /// What it was mounted from (`mapache:PID` for ours).
    pub source: String,
}

/// The topmost mount at `path`, from /proc/self/mountinfo. The path is
/// made absolute without following it: a dead FUSE mount cannot even be
/// resolved.
pub fn mount_at(path: &Path) -> Option<ExistingMount> {
    let absolute = std::path::absolute(path).ok()?;
    let canonical = std::fs::canonicalize(path).ok();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in mountinfo.lines() {
        // `ID PARENT DEV ROOT MOUNTPOINT OPTIONS [TAGS] - FSTYPE SOURCE ...`,
        // spaces in names escaped as \040.
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(point.replace("\\040", " "));
        if point == absolute || Some(&point) == canonical.as_ref() {
            let mut fields = right.split(' ');
            found = Some(ExistingMount {
                fstype: fields.next().unwrap_or_default().to_string(),
                source: fields.next().unwrap_or_default().to_string(),
            });
        }
    }
    found
}
