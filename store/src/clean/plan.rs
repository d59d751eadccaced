//! What `clean` keeps and removes: the roots, everything they reach, and
//! what that means for each pack.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::{CleanOptions, CleanPhase, CleanProgress, CleanReport, DoomedBlobs};
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, Id, PackId, SnapshotId};
use crate::index::IndexedPack;
use crate::repository::IndexedRepository;

/// No pack holds a reachable blob's chosen copy yet.
const UNPLACED: u32 = u32::MAX;

/// One indexed pack and what of it is reachable.
pub(super) struct PackEntry {
    pub entry: IndexedPack,
    /// Bytes of its file; `None` when the file is missing.
    size: Option<u64>,
    live_bytes: u64,
    dead_bytes: u64,
    live_blobs: u64,
}

impl PackEntry {
    /// Bytes of its file (0 when missing).
    pub fn size(&self) -> u64 {
        self.size.unwrap_or(0)
    }
}

/// What happens to a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Repack,
    Delete,
    /// Missing, and nothing reachable was in it: left out of the index.
    Drop,
}

/// The plan made under the shared lock.
pub(super) struct Plan {
    /// Index files in force, and listed ones that others supersede.
    index_in_force: Vec<Id>,
    index_superseded: Vec<Id>,
    /// Every index file listed when planning (damaged ones too).
    index_listed: HashSet<Id>,
    index_files_before: u64,
    pub packs: Vec<PackEntry>,
    fates: Vec<Fate>,
    /// Reachable blobs, each with the number of the pack whose copy is
    /// used.
    used: HashMap<BlobId, u32>,
    /// Snapshots walked, and staging records honoured.
    roots: HashSet<SnapshotId>,
    staging_records: HashSet<Id>,
    staging_areas: u64,
    live_snapshots: u64,
    forgotten_kept: u64,
    /// Forgotten longer than `keep_forgotten`: to be removed.
    expired: Vec<SnapshotId>,
    /// Marks whose snapshot file is gone.
    pub orphan_marks: Vec<SnapshotId>,
}

/// The error that stops a clean which cannot see everything it must keep.
fn refuse(what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "clean refused: {what}; it deletes nothing from a repository it cannot read whole \
         (run `mapache verify`, and `mapache rebuild-index` if it finds damage)"
    ))
}

impl Plan {
    pub(super) fn make(
        repo: &IndexedRepository,
        options: &CleanOptions,
        progress: &CleanProgress,
    ) -> Result<Plan> {
        progress.enter(CleanPhase::ReadingIndex);
        let files = repo.read_index_files()?;
        let damaged: HashSet<Id> = repo
            .skipped()
            .take_kind(FileKind::Index)
            .into_iter()
            .map(|s| s.id)
            .collect();
        let in_force: HashSet<Id> = files.in_force.iter().map(|(id, _)| *id).collect();
        let index_superseded = files
            .listed
            .iter()
            .filter(|id| !in_force.contains(id) && !damaged.contains(id))
            .copied()
            .collect();
        let sizes = repo.pack_sizes()?;
        let mut packs = Vec::new();
        let mut numbered = HashSet::new();
        for (_, file) in &files.in_force {
            for pack in &file.packs {
                if numbered.insert(pack.id) {
                    packs.push(PackEntry {
                        entry: pack.clone(),
                        size: sizes.get(&pack.id).copied(),
                        live_bytes: 0,
                        dead_bytes: 0,
                        live_blobs: 0,
                    });
                }
            }
        }
        let mut plan = Plan {
            index_in_force: files.in_force.iter().map(|(id, _)| *id).collect(),
            index_superseded,
            index_files_before: files.listed.len() as u64,
            index_listed: files.listed.clone(),
            fates: vec![Fate::Keep; packs.len()],
            packs,
            used: HashMap::new(),
            roots: HashSet::new(),
            staging_records: HashSet::new(),
            staging_areas: 0,
            live_snapshots: 0,
            forgotten_kept: 0,
            expired: Vec::new(),
            orphan_marks: Vec::new(),
        };
        progress.enter(CleanPhase::WalkingSnapshots);
        let roots = plan.find_roots(repo, options)?;
        let mut walker = Walker {
            repo,
            used: &mut plan.used,
            known: None,
            progress,
            fresh: None,
        };
        for tree in roots.trees {
            walker.walk(tree)?;
        }
        plan.check_reachable_are_indexed(repo)?;
        // A staging area's blobs were indexed before its record named
        // them; one the index lacks was lost (`verify` says so), and
        // keeping nothing for it changes nothing.
        for blob in roots.staged_blobs {
            if repo.index().contains(&blob) {
                plan.used.entry(blob).or_insert(UNPLACED);
            }
        }
        plan.place_copies();
        plan.decide(options.max_unused)?;
        Ok(plan)
    }

    /// Lists the roots: live snapshots, recallable forgotten ones, and
    /// staging areas. Notes what is expired.
    fn find_roots(&mut self, repo: &IndexedRepository, options: &CleanOptions) -> Result<Roots> {
        let mut roots = Roots::default();
        for (id, snapshot) in repo.snapshots()? {
            self.roots.insert(id);
            roots.trees.push(snapshot.tree);
        }
        if let Some(damaged) = repo.skipped().take_kind(FileKind::Snapshot).first() {
            return Err(refuse(format!(
                "snapshot {} cannot be read ({}); `mapache forget` it first if it is beyond repair",
                damaged.id.short(),
                damaged.reason
            )));
        }
        self.live_snapshots = self.roots.len() as u64;
        let records = repo.staging_records()?;
        let mut bases = HashSet::new();
        let mut areas = HashSet::new();
        for (id, record) in records {
            self.staging_records.insert(id);
            areas.insert(record.area);
            bases.extend(record.base);
            roots.trees.extend(record.base_tree);
            roots.staged_blobs.extend(record.blobs);
        }
        self.staging_areas = areas.len() as u64;
        let cutoff = crate::host::now().secs - options.keep_forgotten_secs;
        for (id, mark) in repo.forgotten()? {
            let snapshot = match repo.load_snapshot(&id) {
                Ok(snapshot) => snapshot,
                Err(Error::NotFound { .. }) => {
                    self.orphan_marks.push(id);
                    continue;
                }
                // It cannot be recalled into anything that restores.
                Err(e) if crate::skipped::is_damage(&e) => {
                    self.expired.push(id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if mark.time.secs > cutoff || bases.contains(&id) {
                self.roots.insert(id);
                self.forgotten_kept += 1;
                roots.trees.push(snapshot.tree);
            } else {
                self.expired.push(id);
            }
        }
        repo.skipped().take_kind(FileKind::Forgotten);
        Ok(roots)
    }

    /// Refuses to go on when a tree names a blob the index lacks: the
    /// repository is damaged, and what is missing might be in a pack that
    /// only looks unused.
    fn check_reachable_are_indexed(&self, repo: &IndexedRepository) -> Result<()> {
        let index = repo.index();
        let mut missing = self.used.keys().filter(|id| !index.contains(id));
        let Some(first) = missing.next() else {
            return Ok(());
        };
        Err(refuse(format!(
            "{} blobs that snapshots refer to are not in the index (first: {})",
            1 + missing.count(),
            first.short()
        )))
    }

    /// Chooses, for each reachable blob stored more than once, the copy to
    /// keep: the one in the pack with the most reachable bytes in it, so
    /// that a repack cut short is finished rather than done again.
    fn place_copies(&mut self) {
        let share: Vec<f64> = self
            .packs
            .iter()
            .map(|pack| {
                let (mut live, mut all) = (0u64, 0u64);
                for blob in &pack.entry.blobs {
                    all += u64::from(blob.length);
                    if self.used.contains_key(&blob.id) {
                        live += u64::from(blob.length);
                    }
                }
                live as f64 / all.max(1) as f64
            })
            .collect();
        for (n, pack) in self.packs.iter().enumerate() {
            if pack.size.is_none() {
                continue;
            }
            for blob in &pack.entry.blobs {
                if let Some(home) = self.used.get_mut(&blob.id) {
                    if *home == UNPLACED || share[n] > share[*home as usize] {
                        *home = n as u32;
                    }
                }
            }
        }
        for (n, pack) in self.packs.iter_mut().enumerate() {
            for blob in &pack.entry.blobs {
                if self.used.get(&blob.id) == Some(&(n as u32)) {
                    pack.live_blobs += 1;
                    pack.live_bytes += u64::from(blob.length);
                } else {
                    pack.dead_bytes += u64::from(blob.length);
                }
            }
        }
    }

    /// Decides each pack's fate: unused ones go, and the most wasteful
    /// partly used ones are repacked until the unused bytes left are at
    /// most `max_unused` of the used ones.
    fn decide(&mut self, max_unused: f64) -> Result<()> {
        if let Some((blob, _)) = self.used.iter().find(|(_, home)| **home == UNPLACED) {
            return Err(refuse(format!(
                "blob {} is indexed only in packs whose files are missing",
                blob.short()
            )));
        }
        let mut candidates = Vec::new();
        let mut live_total = 0;
        for (n, pack) in self.packs.iter().enumerate() {
            live_total += pack.live_bytes;
            self.fates[n] = match (pack.size, pack.live_bytes, pack.dead_bytes) {
                (None, _, _) => Fate::Drop,
                (Some(_), 0, _) => Fate::Delete,
                (Some(_), _, 0) => Fate::Keep,
                (Some(_), _, _) => {
                    candidates.push(n);
                    Fate::Keep
                }
            };
        }
        let waste = |n: &usize| {
            let pack = &self.packs[*n];
            pack.dead_bytes as f64 / (pack.live_bytes + pack.dead_bytes) as f64
        };
        candidates.sort_by(|a, b| waste(b).total_cmp(&waste(a)));
        let mut unused: u64 = candidates.iter().map(|n| self.packs[*n].dead_bytes).sum();
        let allowed = (max_unused * live_total as f64) as u64;
        for n in candidates {
            if unused <= allowed {
                break;
            }
            self.fates[n] = Fate::Repack;
            unused -= self.packs[n].dead_bytes;
        }
        Ok(())
    }

    /// Whether pack number `pack` holds the chosen copy of `blob`.
    pub(super) fn is_live_in(&self, blob: &BlobId, pack: usize) -> bool {
        self.used.get(blob) == Some(&(pack as u32))
    }

    /// The numbers of the packs to repack.
    pub(super) fn to_repack(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.packs.len()).filter(|n| self.fates[*n] == Fate::Repack)
    }

    /// Packs to be deleted: unused and repacked ones.
    pub(super) fn doomed(&self) -> impl Iterator<Item = PackId> + '_ {
        self.packs
            .iter()
            .zip(&self.fates)
            .filter(|(_, fate)| matches!(fate, Fate::Delete | Fate::Repack))
            .map(|(pack, _)| pack.entry.id)
    }

    /// Every blob of a doomed pack, with the doomed packs holding it.
    pub(super) fn doomed_blobs(&self) -> DoomedBlobs {
        let mut out = DoomedBlobs::new();
        for (pack, fate) in self.packs.iter().zip(&self.fates) {
            if matches!(fate, Fate::Delete | Fate::Repack) {
                for blob in &pack.entry.blobs {
                    out.entry(blob.id).or_default().push(pack.entry.id);
                }
            }
        }
        out
    }

    /// Blobs reachable from roots that appeared since the plan: snapshots
    /// written or recalled meanwhile, and staging records.
    pub(super) fn newly_reachable(
        &self,
        repo: &IndexedRepository,
        progress: &CleanProgress,
    ) -> Result<Vec<BlobId>> {
        let mut trees = Vec::new();
        let mut fresh = Vec::new();
        for (id, snapshot) in repo.snapshots()? {
            if !self.roots.contains(&id) {
                trees.push(snapshot.tree);
            }
        }
        if let Some(damaged) = repo.skipped().take_kind(FileKind::Snapshot).first() {
            return Err(refuse(format!(
                "snapshot {} cannot be read ({})",
                damaged.id.short(),
                damaged.reason
            )));
        }
        for (id, record) in repo.staging_records()? {
            if !self.staging_records.contains(&id) {
                trees.extend(record.base_tree);
                fresh.extend(record.blobs);
            }
        }
        let mut seen: HashMap<BlobId, u32> = HashMap::new();
        let mut walker = Walker {
            repo,
            used: &mut seen,
            known: Some(&self.used),
            progress,
            fresh: Some(Vec::new()),
        };
        for tree in trees {
            walker.walk(tree)?;
        }
        fresh.extend(walker.fresh.unwrap_or_default());
        fresh.retain(|blob| !self.used.contains_key(blob));
        Ok(fresh)
    }

    /// Keeps the packs in `rescued` as they are.
    pub(super) fn rescue(&mut self, rescued: &HashSet<PackId>) {
        for (pack, fate) in self.packs.iter().zip(self.fates.iter_mut()) {
            if rescued.contains(&pack.entry.id) {
                *fate = Fate::Keep;
            }
        }
    }

    /// Index entries of the packs that stay.
    pub(super) fn kept_entries(&self) -> Vec<IndexedPack> {
        self.packs
            .iter()
            .zip(&self.fates)
            .filter(|(_, fate)| **fate == Fate::Keep)
            .map(|(pack, _)| pack.entry.clone())
            .collect()
    }

    /// The index files the merged index replaces.
    pub(super) fn old_index_files(&self) -> impl Iterator<Item = Id> + '_ {
        self.index_in_force
            .iter()
            .chain(&self.index_superseded)
            .copied()
    }

    /// Whether index file `id` was listed when planning.
    pub(super) fn knew_index_file(&self, id: &Id) -> bool {
        self.index_listed.contains(id)
    }

    /// The expired snapshots that nobody recalled meanwhile.
    pub(super) fn expired_still_forgotten(
        &self,
        repo: &IndexedRepository,
    ) -> Result<Vec<SnapshotId>> {
        let forgotten: HashSet<SnapshotId> =
            repo.forgotten()?.into_iter().map(|(id, _)| id).collect();
        Ok(self
            .expired
            .iter()
            .filter(|id| forgotten.contains(id))
            .copied()
            .collect())
    }

    /// The report of the plan, before anything is done.
    pub(super) fn report(&self, dry_run: bool) -> CleanReport {
        let mut report = CleanReport {
            dry_run,
            snapshots: self.live_snapshots,
            forgotten_kept: self.forgotten_kept,
            forgotten_removed: self.expired.clone(),
            staging_areas: self.staging_areas,
            blobs_used: self.used.len() as u64,
            index_files_before: self.index_files_before,
            ..CleanReport::default()
        };
        report.blobs_unused = self
            .packs
            .iter()
            .map(|pack| pack.entry.blobs.len() as u64)
            .sum::<u64>()
            .saturating_sub(report.blobs_used);
        self.settle(&mut report);
        let blobs_after: u64 = self
            .packs
            .iter()
            .zip(&self.fates)
            .map(|(pack, fate)| match fate {
                Fate::Keep => pack.entry.blobs.len() as u64,
                Fate::Repack => pack.live_blobs,
                Fate::Delete | Fate::Drop => 0,
            })
            .sum();
        report.index_files_after =
            blobs_after.div_ceil(crate::rebuild_index::BLOBS_PER_INDEX_FILE as u64);
        report
    }

    /// Fills in the pack counts and sizes as the fates now stand.
    pub(super) fn settle(&self, report: &mut CleanReport) {
        report.packs = self.packs.len() as u64;
        report.packs_deleted = 0;
        report.packs_repacked = 0;
        report.bytes = 0;
        report.bytes_used = 0;
        report.bytes_freed = 0;
        report.bytes_unused_left = 0;
        report.missing_packs.clear();
        for (pack, fate) in self.packs.iter().zip(&self.fates) {
            let size = pack.size.unwrap_or(0);
            report.bytes += size;
            report.bytes_used += pack.live_bytes;
            match fate {
                Fate::Keep => report.bytes_unused_left += pack.dead_bytes,
                Fate::Delete => {
                    report.packs_deleted += 1;
                    report.bytes_freed += size;
                }
                Fate::Repack => {
                    report.packs_repacked += 1;
                    // The copies of its live blobs take room again.
                    report.bytes_freed += size.saturating_sub(pack.live_bytes);
                }
                Fate::Drop => report.missing_packs.push(pack.entry.id),
            }
        }
    }
}

/// What the plan starts from.
#[derive(Default)]
struct Roots {
    trees: Vec<BlobId>,
    staged_blobs: Vec<BlobId>,
}

/// Marks everything a tree reaches.
struct Walker<'a> {
    repo: &'a IndexedRepository,
    used: &'a mut HashMap<BlobId, u32>,
    /// Blobs marked before, whose trees need no walk.
    known: Option<&'a HashMap<BlobId, u32>>,
    progress: &'a CleanProgress,
    /// Blobs newly marked, when wanted.
    fresh: Option<Vec<BlobId>>,
}

impl Walker<'_> {
    fn walk(&mut self, root: BlobId) -> Result<()> {
        let mut stack = vec![root];
        while let Some(tree_id) = stack.pop() {
            let known = self.known.is_some_and(|known| known.contains_key(&tree_id));
            if known || self.used.insert(tree_id, UNPLACED).is_some() {
                continue;
            }
            self.fresh.iter_mut().for_each(|fresh| fresh.push(tree_id));
            let tree = self
                .repo
                .load_tree(&tree_id)
                .map_err(|e| refuse(format!("tree {} cannot be read ({e})", tree_id.short())))?;
            self.progress.trees.fetch_add(1, Ordering::Relaxed);
            for node in tree.nodes {
                for blob in node.content {
                    let known = self.known.is_some_and(|known| known.contains_key(&blob));
                    if !known && self.used.insert(blob, UNPLACED).is_none() {
                        self.fresh.iter_mut().for_each(|fresh| fresh.push(blob));
                    }
                }
                stack.extend(node.subtree);
            }
        }
        Ok(())
    }
}
