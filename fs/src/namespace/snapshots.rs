//! The virtual folders around the snapshots: `snapshots/`, `ids/`,
//! `latest`, `tags/`, `hosts/`, from a snapshot list re-read at most once a
//! second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mapache_store::backend::FileKind;
use mapache_store::snapshot::Snapshot;
use mapache_store::tree::{Node, NodeKind};
use mapache_store::SnapshotId;

use super::{Entry, Grouping, Namespace, REFRESH_INTERVAL};
use crate::error::{FsError, FsResult};

/// A snapshot as the namespace shows it.
#[derive(Clone)]
pub(super) struct Listed {
    id: SnapshotId,
    snapshot: Arc<Snapshot>,
    /// Its name under `snapshots/`: local time, made unique.
    time_name: String,
}

/// The snapshot list as last read.
pub(super) struct SnapshotView {
    listed: Vec<Listed>,
    loaded: HashMap<SnapshotId, Arc<Snapshot>>,
    refreshed: Option<Instant>,
}

impl SnapshotView {
    /// Not read yet.
    pub(super) fn new() -> SnapshotView {
        SnapshotView {
            listed: Vec::new(),
            loaded: HashMap::new(),
            refreshed: None,
        }
    }
}

fn time_name(snapshot: &Snapshot) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(snapshot.time.secs, snapshot.time.nanos)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_else(|| snapshot.time.secs.to_string())
}

impl Namespace {
    /// The snapshots, oldest first, re-read when the last look is older
    /// than a second. New index files are loaded too, so that a snapshot
    /// written by another process can be read. While the repository cannot
    /// be read, the last list stays (reading files then fails with EIO).
    pub(super) fn snapshots(&self) -> FsResult<Vec<Listed>> {
        let mut view = self.view.lock();
        if view
            .refreshed
            .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
        {
            return Ok(view.listed.clone());
        }
        match self.read_snapshot_list(&mut view) {
            Ok(listed) => Ok(listed),
            Err(_) if view.refreshed.is_some() || !view.listed.is_empty() => {
                view.refreshed = Some(Instant::now());
                Ok(view.listed.clone())
            }
            Err(e) => Err(e),
        }
    }

    fn read_snapshot_list(&self, view: &mut SnapshotView) -> FsResult<Vec<Listed>> {
        let files = self.repo.backend().list(FileKind::Snapshot)?;
        let mut new = false;
        for file in &files {
            let id = SnapshotId(file.id);
            if let std::collections::hash_map::Entry::Vacant(slot) = view.loaded.entry(id) {
                slot.insert(Arc::new(self.repo.load_snapshot(&id)?));
                new = true;
            }
        }
        if new {
            self.repo.reload_index()?;
        }
        let present: std::collections::HashSet<SnapshotId> =
            files.iter().map(|f| SnapshotId(f.id)).collect();
        view.loaded.retain(|id, _| present.contains(id));
        let mut listed: Vec<Listed> = view
            .loaded
            .iter()
            .map(|(id, snapshot)| Listed {
                id: *id,
                snapshot: snapshot.clone(),
                time_name: time_name(snapshot),
            })
            .collect();
        listed.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        // Two snapshots in the same second get their short id appended.
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in &listed {
            *counts.entry(l.time_name.clone()).or_default() += 1;
        }
        for l in &mut listed {
            if counts[&l.time_name] > 1 {
                l.time_name = format!("{}-{}", l.time_name, l.id.short());
            }
        }
        view.listed = listed.clone();
        view.refreshed = Some(Instant::now());
        Ok(listed)
    }

    /// Forgets the snapshot list, so that the next look re-reads it (after
    /// a commit through this mount: it shows at once).
    pub(crate) fn refresh_snapshots(&self) {
        self.view.lock().refreshed = None;
    }

    /// The synthetic folder node standing for a snapshot's root.
    pub(super) fn snapshot_root(listed: &Listed) -> Entry {
        let s = &listed.snapshot;
        let mut node = Node::new(b"", NodeKind::Dir);
        node.mode = 0o755;
        node.uid = s.uid;
        node.gid = s.gid;
        node.mtime = s.time;
        node.ctime = s.time;
        node.atime = s.time;
        node.subtree = Some(s.tree);
        Entry::Node {
            node: Arc::new(node),
            root: s.tree,
            parent: 0,
        }
    }

    /// The children of a virtual folder, as (name, entry) pairs.
    pub(super) fn virtual_children(&self, entry: &Entry) -> FsResult<Vec<(Vec<u8>, Entry)>> {
        let snapshots = || self.snapshots();
        let by_time = |list: Vec<Listed>| {
            list.iter()
                .map(|l| (l.time_name.clone().into_bytes(), Self::snapshot_root(l)))
                .collect::<Vec<_>>()
        };
        Ok(match entry {
            Entry::Root => {
                let mut children = vec![
                    (b"snapshots".to_vec(), Entry::SnapshotList { by_id: false }),
                    (b"ids".to_vec(), Entry::SnapshotList { by_id: true }),
                ];
                if let Some(newest) = snapshots()?.last() {
                    let target = format!("snapshots/{}", newest.time_name).into_bytes();
                    children.push((b"latest".to_vec(), Entry::Latest(target)));
                }
                children.push((b"tags".to_vec(), Entry::Groups(Grouping::Tag)));
                children.push((b"hosts".to_vec(), Entry::Groups(Grouping::Host)));
                if self.staging.is_some() {
                    children.push((b"staging".to_vec(), Entry::StagingRoot));
                }
                children
            }
            Entry::SnapshotList { by_id: false } => by_time(snapshots()?),
            Entry::SnapshotList { by_id: true } => snapshots()?
                .iter()
                .map(|l| (l.id.short().into_bytes(), Self::snapshot_root(l)))
                .collect(),
            Entry::Groups(grouping) => {
                let mut names: Vec<String> = snapshots()?
                    .iter()
                    .flat_map(|l| match grouping {
                        Grouping::Tag => l.snapshot.tags.clone(),
                        Grouping::Host => vec![l.snapshot.host.clone()],
                    })
                    .filter(|n| !n.is_empty() && !n.contains('/'))
                    .collect();
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .map(|n| (n.clone().into_bytes(), Entry::Group(*grouping, n)))
                    .collect()
            }
            Entry::Group(grouping, name) => by_time(
                snapshots()?
                    .into_iter()
                    .filter(|l| match grouping {
                        Grouping::Tag => l.snapshot.tags.contains(name),
                        Grouping::Host => &l.snapshot.host == name,
                    })
                    .collect(),
            ),
            Entry::Latest(_) | Entry::Node { .. } | Entry::Staged(_) | Entry::StagingRoot => {
                return Err(FsError::NotDir)
            }
        })
    }
}
