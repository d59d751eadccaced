//! `clean` on real repositories in memory: what it keeps, what it frees,
//! and that cutting it short after any change leaves a sound repository
//! that a rerun finishes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::archiver::{snapshot, ArchiveOptions, Progress};
use crate::backend::{Backend, FaultyBackend, MemoryBackend};
use crate::config::Config;
use crate::keys::KdfParams;
use crate::rebuild_index::index_unindexed_packs;
use crate::repository::Repository;
use crate::staging_record::StagingRecord;
use crate::tree::NodeKind;
use crate::verify::{verify, VerifyOptions, VerifyProgress};

/// Writes file `name` of `len` bytes made from `seed`.
fn write_file(dir: &Path, name: &str, len: usize, seed: u32) {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    std::fs::write(dir.join(name), data).unwrap();
}

struct Fixture {
    memory: Arc<MemoryBackend>,
    backend: Arc<FaultyBackend>,
    source: tempfile::TempDir,
}

impl Fixture {
    /// A repository with small packs, so that a clean has many packs to
    /// delete and repack.
    fn new() -> Fixture {
        Fixture::on(Arc::new(MemoryBackend::new()), tempfile::tempdir().unwrap())
    }

    fn on(memory: Arc<MemoryBackend>, source: tempfile::TempDir) -> Fixture {
        let backend = Arc::new(FaultyBackend::new(memory.clone()));
        if !backend.is_repository().unwrap() {
            let config = Config {
                pack_size: 64 * 1024,
                ..Config::new()
            };
            Repository::init(backend.clone(), b"pw", KdfParams::insecure_fast(), config).unwrap();
        }
        Fixture {
            memory,
            backend,
            source,
        }
    }

    /// An independent copy of the repository (same source folder path is
    /// not needed: snapshots are compared by content).
    fn copy(&self) -> Fixture {
        let source = tempfile::tempdir().unwrap();
        Fixture::on(Arc::new(self.memory.duplicate()), source)
    }

    fn indexed(&self) -> Arc<IndexedRepository> {
        let repo = Repository::open(self.backend.clone(), b"pw").unwrap();
        Arc::new(repo.load_index().unwrap())
    }

    fn snapshot(&self) -> SnapshotId {
        let repo = self.indexed();
        index_unindexed_packs(&repo).unwrap();
        let options = ArchiveOptions {
            threads: 2,
            ..ArchiveOptions::default()
        };
        let path = self.source.path().to_path_buf();
        snapshot(repo, &[path], &options, &Progress::default())
            .unwrap()
            .id
    }

    fn clean_with(&self, options: &CleanOptions) -> Result<CleanReport> {
        let repo = self.indexed();
        let shared = repo.lock(false)?;
        clean(&repo, &shared, options, &CleanProgress::default())
    }

    fn clean(&self) -> CleanReport {
        self.clean_with(&options(0.0, 0)).unwrap()
    }

    /// Every file of snapshot `id`, path to bytes, read through the index.
    fn contents(&self, id: &SnapshotId) -> BTreeMap<String, Vec<u8>> {
        let repo = self.indexed();
        let tree = repo.load_snapshot(id).unwrap().tree;
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), tree)];
        while let Some((path, tree)) = stack.pop() {
            for node in repo.load_tree(&tree).unwrap().nodes {
                let path = format!("{path}/{}", node.name_lossy());
                match node.kind {
                    NodeKind::Dir => stack.push((path, node.subtree.unwrap())),
                    NodeKind::File => {
                        let bytes = node
                            .content
                            .iter()
                            .flat_map(|blob| repo.read_blob(blob).unwrap())
                            .collect();
                        out.insert(path, bytes);
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn assert_sound(&self) {
        let repo = Repository::open(self.backend.clone(), b"pw").unwrap();
        let options = VerifyOptions {
            read_data: Some(crate::verify::DataSubset::All),
            threads: 2,
        };
        let report = verify(repo, &options, &VerifyProgress::default()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.damaged_snapshots.is_empty());
    }

    fn pack_bytes(&self) -> u64 {
        self.backend
            .list(FileKind::Pack)
            .unwrap()
            .iter()
            .map(|f| f.size)
            .sum()
    }
}

fn options(max_unused: f64, keep_forgotten_secs: i64) -> CleanOptions {
    CleanOptions {
        max_unused,
        keep_forgotten_secs,
        dry_run: false,
        lock_wait: Duration::ZERO,
    }
}

/// A fixture with two snapshots: the first of 24 files, the second
/// without a third of them and with two new ones; the first forgotten.
fn two_generations() -> (Fixture, SnapshotId, SnapshotId) {
    let fixture = Fixture::new();
    let dir = fixture.source.path();
    for n in 0..24 {
        write_file(dir, &format!("file{n:02}"), 30_000 + n as usize * 1000, n);
    }
    let first = fixture.snapshot();
    for n in (0..24).step_by(3) {
        std::fs::remove_file(dir.join(format!("file{n:02}"))).unwrap();
    }
    write_file(dir, "new-a", 50_000, 100);
    write_file(dir, "new-b", 70_000, 101);
    let second = fixture.snapshot();
    fixture.indexed().forget(&first, "test").unwrap();
    (fixture, first, second)
}

#[test]
fn clean_frees_what_only_forgotten_snapshots_used_and_keeps_every_live_file() {
    let (fixture, first, second) = two_generations();
    let expected = fixture.contents(&second);
    let before = fixture.pack_bytes();
    let report = fixture.clean();
    assert_eq!(report.forgotten_removed, vec![first]);
    assert!(report.packs_deleted + report.packs_repacked > 0);
    assert_eq!(
        report.bytes_unused_left, 0,
        "max_unused 0 repacks every partly used pack"
    );
    let after = fixture.pack_bytes();
    assert!(after < before, "{after} >= {before}");
    // What is left is what the live snapshot needs, plus pack overhead.
    let used: u64 = fixture
        .indexed()
        .index()
        .iter()
        .map(|(_, l)| u64::from(l.length))
        .sum();
    assert!(
        after <= used + used / 20,
        "{after} bytes of packs for {used} bytes of blobs"
    );
    fixture.assert_sound();
    assert_eq!(fixture.contents(&second), expected);
    assert!(fixture.backend.list(FileKind::Snapshot).unwrap().len() == 1);
    assert!(fixture
        .backend
        .list(FileKind::Forgotten)
        .unwrap()
        .is_empty());
    // Nothing is left to do.
    let again = fixture.clean();
    assert_eq!(again.packs_deleted + again.packs_repacked, 0);
    assert_eq!(again.bytes_freed, 0);
}

#[test]
fn recallable_forgotten_snapshots_keep_their_data() {
    let (fixture, first, _) = two_generations();
    let expected = fixture.contents(&first);
    let report = fixture.clean_with(&options(0.0, 3600)).unwrap();
    assert!(report.forgotten_removed.is_empty());
    assert_eq!(report.forgotten_kept, 1);
    assert_eq!(report.packs_deleted, 0);
    fixture.indexed().recall(&first).unwrap();
    assert_eq!(fixture.contents(&first), expected);
    fixture.assert_sound();
}

#[test]
fn a_dry_run_changes_nothing_and_tells_what_a_run_does() {
    let (fixture, _, _) = two_generations();
    let files = |f: &Fixture| {
        [FileKind::Pack, FileKind::Index, FileKind::Snapshot]
            .map(|kind| f.backend.list_ids(kind).unwrap().len())
    };
    let before = files(&fixture);
    let mut dry = options(0.0, 0);
    dry.dry_run = true;
    let planned = fixture.clean_with(&dry).unwrap();
    assert_eq!(files(&fixture), before);
    let done = fixture.clean();
    assert_eq!(planned.packs_deleted, done.packs_deleted);
    assert_eq!(planned.packs_repacked, done.packs_repacked);
    assert_eq!(planned.forgotten_removed, done.forgotten_removed);
}

#[test]
fn max_unused_leaves_packs_whose_waste_is_tolerated() {
    let (fixture, _, second) = two_generations();
    let expected = fixture.contents(&second);
    let report = fixture.clean_with(&options(10.0, 0)).unwrap();
    assert_eq!(report.packs_repacked, 0);
    assert!(report.bytes_unused_left > 0);
    assert_eq!(fixture.contents(&second), expected);
    fixture.assert_sound();
}

#[test]
fn a_staging_record_keeps_its_blobs_and_its_forgotten_base() {
    let (fixture, first, _) = two_generations();
    let repo = fixture.indexed();
    let first_files = fixture.contents(&first);
    let base_tree = repo.load_snapshot(&first).unwrap().tree;
    let record = StagingRecord {
        version: 1,
        area: Id::random(),
        host: "elsewhere".into(),
        path: "/state".into(),
        base: Some(first),
        base_tree: Some(base_tree),
        blobs: Vec::new(),
        time: crate::host::now(),
    };
    repo.save_staging_record(&record).unwrap();
    let report = fixture.clean();
    assert_eq!(report.staging_areas, 1);
    assert!(report.forgotten_removed.is_empty(), "a staging base stays");
    assert_eq!(fixture.contents(&first), first_files);
    fixture.assert_sound();
}

#[test]
fn staged_blobs_named_only_by_a_record_survive() {
    let fixture = Fixture::new();
    write_file(fixture.source.path(), "kept", 90_000, 7);
    let only = fixture.snapshot();
    let repo = fixture.indexed();
    // The only snapshot's data blobs are all the data blobs there are.
    let blobs: Vec<BlobId> = repo
        .index()
        .iter()
        .filter(|(_, location)| location.blob_type == crate::blob::BlobType::Data)
        .map(|(id, _)| id)
        .collect();
    assert!(!blobs.is_empty());
    repo.save_staging_record(&StagingRecord {
        version: 1,
        area: Id::random(),
        host: "elsewhere".into(),
        path: "/state".into(),
        base: None,
        base_tree: None,
        blobs: blobs.clone(),
        time: crate::host::now(),
    })
    .unwrap();
    repo.forget(&only, "test").unwrap();
    fixture.clean();
    let repo = fixture.indexed();
    for blob in &blobs {
        assert!(
            repo.read_blob(blob).is_ok(),
            "staged blob {blob} was deleted"
        );
    }
    fixture.assert_sound();
}

#[test]
fn a_snapshot_made_while_clean_plans_keeps_the_packs_it_reuses() {
    let (fixture, first, _) = two_generations();
    let expected = fixture.contents(&first);
    // Plan with the first snapshot forgotten...
    let repo = fixture.indexed();
    let shared = repo.lock(false).unwrap();
    let progress = CleanProgress::default();
    let plan = Plan::make(&repo, &options(0.0, 0), &progress).unwrap();
    let mut report = plan.report(false);
    let repacked = repack::repack(&repo, &plan, &progress).unwrap();
    // ... then a snapshot of the first generation's files comes in (it
    // reuses blobs the plan found unused), and only then the deleting.
    let dir = fixture.source.path();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for n in 0..24 {
        write_file(dir, &format!("file{n:02}"), 30_000 + n as usize * 1000, n);
    }
    let late = fixture.snapshot();
    drop(shared);
    let repo = fixture.indexed();
    let shared = repo.lock(false).unwrap();
    let _exclusive = repo
        .lock_waiting(true, Duration::ZERO, Some(&shared))
        .unwrap();
    finish(&repo, plan, repacked, None, &progress, &mut report).unwrap();
    assert!(report.packs_rescued > 0);
    let late_files: BTreeMap<String, Vec<u8>> = fixture
        .contents(&late)
        .into_iter()
        .map(|(path, bytes)| (path.rsplit('/').next().unwrap().to_string(), bytes))
        .collect();
    let first_files: BTreeMap<String, Vec<u8>> = expected
        .into_iter()
        .map(|(path, bytes)| (path.rsplit('/').next().unwrap().to_string(), bytes))
        .collect();
    assert_eq!(late_files, first_files);
    drop(_exclusive);
    drop(shared);
    fixture.assert_sound();
}

#[test]
fn clean_cut_short_after_any_change_leaves_a_sound_repository_and_a_rerun_finishes() {
    let (template, _, second) = two_generations();
    let expected = template.contents(&second);
    // How many changes a whole run makes: the first allowance it
    // finishes within.
    let changes = (0..)
        .find(|n| {
            let attempt = template.copy();
            attempt.backend.fail_changes_after(*n);
            attempt.clean_with(&options(0.0, 0)).is_ok()
        })
        .unwrap();
    assert!(changes >= 20, "only {changes} changes: too few cut points");
    for cut in 0..changes {
        let fixture = template.copy();
        fixture.backend.fail_changes_after(cut);
        assert!(fixture.clean_with(&options(0.0, 0)).is_err());
        fixture.backend.heal();
        // The killed process's lock would be stale; this one's is not.
        fixture.indexed().remove_locks(true).unwrap();
        fixture.assert_sound();
        assert_eq!(
            fixture.contents(&second),
            expected,
            "after a cut at change {cut}"
        );
        let report = fixture.clean();
        assert_eq!(report.bytes_unused_left, 0);
        fixture.assert_sound();
        assert_eq!(fixture.contents(&second), expected);
        let again = fixture.clean();
        assert_eq!(
            again.packs_deleted + again.packs_repacked,
            0,
            "after a cut at change {cut}"
        );
    }
}

#[test]
fn a_pack_another_process_indexed_meanwhile_is_not_deleted() {
    let (fixture, _, _) = two_generations();
    let repo = fixture.indexed();
    let shared = repo.lock(false).unwrap();
    let progress = CleanProgress::default();
    let plan = Plan::make(&repo, &options(0.0, 0), &progress).unwrap();
    let mut report = plan.report(false);
    let doomed: Vec<PackId> = plan.doomed().collect();
    assert!(!doomed.is_empty());
    // Another process indexes one of the doomed packs again (as a run
    // that found it in no index would), in a file of its own.
    let entry = plan
        .packs
        .iter()
        .find(|pack| pack.entry.id == doomed[0])
        .unwrap()
        .entry
        .clone();
    repo.save(&IndexFile {
        supersedes: Vec::new(),
        packs: vec![entry],
    })
    .unwrap();
    let repacked = repack::repack(&repo, &plan, &progress).unwrap();
    let _exclusive = repo
        .lock_waiting(true, Duration::ZERO, Some(&shared))
        .unwrap();
    finish(&repo, plan, repacked, None, &progress, &mut report).unwrap();
    assert!(fixture
        .backend
        .list_ids(FileKind::Pack)
        .unwrap()
        .contains(&doomed[0].0));
    drop(_exclusive);
    drop(shared);
    fixture.assert_sound();
}
