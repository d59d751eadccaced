//! Damage injected into a real repository (in memory), then found by
//! `verify` and repaired by `rebuild-index` and a new snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::archiver::{snapshot, ArchiveOptions, Progress};
use crate::backend::{Backend, FaultyBackend, FileKind, MemoryBackend};
use crate::blob::BlobType;
use crate::config::Config;
use crate::keys::KdfParams;
use crate::rebuild_index::{index_unindexed_packs, rebuild_index, RebuildProgress};
use crate::repository::IndexedRepository;

struct Fixture {
    backend: Arc<FaultyBackend>,
    source: tempfile::TempDir,
}

impl Fixture {
    /// A repository with small packs and one snapshot of a few files.
    fn new() -> Fixture {
        let backend = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new())));
        let config = Config {
            pack_size: 64 * 1024,
            ..Config::new()
        };
        Repository::init(backend.clone(), b"pw", KdfParams::insecure_fast(), config).unwrap();
        let source = tempfile::tempdir().unwrap();
        for n in 0..12u32 {
            let mut data = vec![0u8; 40_000];
            blake3::Hasher::new()
                .update(&n.to_le_bytes())
                .finalize_xof()
                .fill(&mut data);
            std::fs::write(source.path().join(format!("file{n:02}")), data).unwrap();
        }
        std::fs::create_dir(source.path().join("sub")).unwrap();
        std::fs::write(source.path().join("sub/small"), b"small file").unwrap();
        let fixture = Fixture { backend, source };
        fixture.snapshot().unwrap();
        fixture
    }

    fn open(&self) -> Repository {
        Repository::open(self.backend.clone(), b"pw").unwrap()
    }

    fn indexed(&self) -> Arc<IndexedRepository> {
        Arc::new(self.open().load_index().unwrap())
    }

    fn snapshot(&self) -> crate::Result<crate::archiver::Archived> {
        let repo = self.indexed();
        index_unindexed_packs(&repo)?;
        let options = ArchiveOptions {
            threads: 2,
            ..ArchiveOptions::default()
        };
        snapshot(repo, &[self.path()], &options, &Progress::default())
    }

    fn path(&self) -> PathBuf {
        self.source.path().to_path_buf()
    }

    fn verify(&self, read_data: bool) -> VerifyReport {
        let options = VerifyOptions {
            read_data: read_data.then_some(DataSubset::All),
            threads: 2,
        };
        verify(self.open(), &options, &VerifyProgress::default()).unwrap()
    }

    fn rebuild(&self, read_data: bool) -> crate::rebuild_index::RebuildReport {
        rebuild_index(&self.open(), read_data, 2, &RebuildProgress::default()).unwrap()
    }

    /// A pack holding data blobs.
    fn data_pack(&self) -> PackId {
        self.large_blob().pack
    }

    /// Where the content of one of the large files is.
    fn large_blob(&self) -> crate::index::BlobLocation {
        let repo = self.indexed();
        let index = repo.index();
        let (_, location) = index
            .iter()
            .find(|(_, l)| l.blob_type == BlobType::Data && l.raw_length == 40_000)
            .unwrap();
        location
    }

    fn ids(&self, kind: FileKind) -> Vec<Id> {
        self.backend
            .list(kind)
            .unwrap()
            .iter()
            .map(|f| f.id)
            .collect()
    }
}

fn damaged_paths(report: &VerifyReport) -> Vec<String> {
    report
        .damaged_snapshots
        .iter()
        .flat_map(|s| s.paths.iter().map(|p| p.path.clone()))
        .collect()
}

fn ends_with_any(paths: &[String], root: &Path) -> bool {
    let root = root.to_string_lossy();
    paths.iter().all(|p| p.starts_with(&*root))
}

#[test]
fn a_whole_repository_verifies_with_and_without_reading_data() {
    let fixture = Fixture::new();
    let report = fixture.verify(false);
    assert!(!report.is_damaged(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 1);
    assert!(report.trees >= 2);
    assert_eq!(report.packs_read, 0);
    let report = fixture.verify(true);
    assert!(!report.is_damaged(), "{:?}", report.problems);
    assert_eq!(report.packs_read, report.packs);
    assert!(report.unindexed_packs.is_empty());
}

#[test]
fn a_lost_pack_is_named_with_the_files_it_breaks_and_stops_spreading_after_rebuild() {
    let fixture = Fixture::new();
    let pack = fixture.data_pack();
    fixture.backend.delete(FileKind::Pack, &pack.0).unwrap();

    let report = fixture.verify(false);
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::MissingPack { pack: missing, .. } if *missing == pack)));
    let paths = damaged_paths(&report);
    assert!(!paths.is_empty());
    assert!(ends_with_any(&paths, &fixture.path()), "{paths:?}");

    // Before the rebuild the index still lists the lost blobs, and a new
    // snapshot would refer to them; after it, the snapshot stores them again.
    let rebuilt = fixture.rebuild(false);
    assert_eq!(rebuilt.packs_dropped.len(), 1);
    assert_eq!(rebuilt.packs_dropped[0].pack, pack);
    let archived = fixture.snapshot().unwrap();
    assert!(archived.snapshot.summary.blobs_added > 0);
    // The new snapshot brought back every lost blob: both snapshots are whole.
    let report = fixture.verify(true);
    assert!(!report.is_damaged(), "{:?}", report.problems);
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_reading_data_and_dropped_by_rebuild() {
    let fixture = Fixture::new();
    let blob = fixture.large_blob();
    let pack = blob.pack;
    let inside = i64::from(blob.offset) + 100;
    fixture
        .backend
        .flip_byte(FileKind::Pack, &pack.0, inside)
        .unwrap();

    // The structure does not show it; reading does, down to the file.
    assert!(!fixture.verify(false).is_damaged());
    let report = fixture.verify(true);
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::PackHashMismatch { pack: bad, .. } if *bad == pack)));
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::DamagedBlob { pack: bad, .. } if *bad == pack)));
    assert_eq!(
        damaged_paths(&report).len(),
        1,
        "{:?}",
        report.damaged_snapshots
    );

    let rebuilt = fixture.rebuild(true);
    assert_eq!(rebuilt.blobs_dropped, 1);
    let archived = fixture.snapshot().unwrap();
    // The damaged file's one blob is stored again (and trees whose atimes
    // the reading changed).
    let added = archived.snapshot.summary.bytes_added;
    assert!((40_000..50_000).contains(&added), "{added}");
    // What remains is the damaged pack itself; no snapshot is affected.
    let report = fixture.verify(true);
    assert!(
        report.damaged_snapshots.is_empty(),
        "{:?}",
        report.damaged_snapshots
    );
    assert!(report
        .problems
        .iter()
        .all(|p| matches!(p, Problem::PackHashMismatch { .. })));
}

#[test]
fn a_lost_index_file_is_rebuilt_from_the_packs() {
    let fixture = Fixture::new();
    for id in fixture.ids(FileKind::Index) {
        fixture.backend.delete(FileKind::Index, &id).unwrap();
    }
    let report = fixture.verify(false);
    assert!(report.is_damaged());
    assert_eq!(report.unindexed_packs.len() as u64, report.packs);
    let rebuilt = fixture.rebuild(false);
    assert_eq!(rebuilt.packs_added.len() as u64, report.packs);
    let report = fixture.verify(true);
    assert!(!report.is_damaged(), "{:?}", report.problems);
    assert!(report.unindexed_packs.is_empty());
}

#[test]
fn damaged_snapshot_and_index_files_are_named_and_skipped() {
    let fixture = Fixture::new();
    fixture.snapshot().unwrap();
    let snapshot = fixture.ids(FileKind::Snapshot)[0];
    fixture
        .backend
        .flip_byte(FileKind::Snapshot, &snapshot, 20)
        .unwrap();
    let index = fixture.ids(FileKind::Index)[0];
    fixture
        .backend
        .truncate(FileKind::Index, &index, 10)
        .unwrap();

    let repo = fixture.open();
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    let notes = repo.skipped().take();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].kind, FileKind::Snapshot);

    let report = fixture.verify(false);
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::DamagedSnapshot { snapshot: s, .. } if s.0 == snapshot)));
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::DamagedIndexFile { index: i, .. } if *i == index)));
    // Rebuilding replaces the damaged index file too.
    fixture.rebuild(false);
    assert!(!fixture.ids(FileKind::Index).contains(&index));
}

#[test]
fn a_truncated_pack_is_found_without_reading_data() {
    let fixture = Fixture::new();
    let pack = fixture.data_pack();
    fixture
        .backend
        .truncate(FileKind::Pack, &pack.0, 1000)
        .unwrap();
    let report = fixture.verify(false);
    assert!(report.problems.iter().any(
        |p| matches!(p, Problem::TruncatedPack { pack: bad, size: 1000, .. } if *bad == pack)
    ));
    assert!(!damaged_paths(&report).is_empty());
}

#[test]
fn packs_of_a_run_stopped_before_its_index_are_used_by_the_next_run() {
    let fixture = Fixture::new();
    std::fs::write(fixture.path().join("new"), vec![7u8; 300_000]).unwrap();
    fixture.backend.fail_writes_after(0, &[FileKind::Index]);
    assert!(fixture.snapshot().is_err());
    fixture.backend.heal();
    assert_eq!(fixture.ids(FileKind::Snapshot).len(), 1);
    // The pack of the new file exists but no index lists it.
    assert!(!fixture.verify(false).unindexed_packs.is_empty());
    let archived = fixture.snapshot().unwrap();
    // At most the trees are stored again, not the file's data.
    assert!(archived.snapshot.summary.bytes_added < 1000);
    assert!(!fixture.verify(true).is_damaged());
}

#[test]
fn a_failed_write_leaves_no_snapshot_and_the_rerun_completes() {
    let fixture = Fixture::new();
    std::fs::write(fixture.path().join("more"), vec![9u8; 200_000]).unwrap();
    fixture.backend.fail_writes_after(1, &[FileKind::Pack]);
    assert!(fixture.snapshot().is_err());
    fixture.backend.heal();
    assert_eq!(fixture.ids(FileKind::Snapshot).len(), 1);
    fixture.snapshot().unwrap();
    let report = fixture.verify(true);
    assert!(!report.is_damaged(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 2);
}

#[test]
fn an_interrupted_rebuild_leaves_a_usable_index() {
    let fixture = Fixture::new();
    let pack = fixture.data_pack();
    fixture.backend.delete(FileKind::Pack, &pack.0).unwrap();
    // New index files are written, the marker that supersedes the old ones
    // is not: both sets are in force, and both are true.
    fixture.backend.fail_writes_after(1, &[FileKind::Index]);
    let result = rebuild_index(&fixture.open(), false, 2, &RebuildProgress::default());
    assert!(result.is_err());
    fixture.backend.heal();
    let repo = fixture.indexed();
    assert!(!repo.index().is_empty());
    fixture.rebuild(false);
    let report = fixture.verify(false);
    assert!(report
        .problems
        .iter()
        .all(|p| matches!(p, Problem::MissingBlob { .. })));
    assert!(fixture.snapshot().unwrap().snapshot.summary.blobs_added > 0);
    assert!(!fixture.verify(true).is_damaged());
}

#[test]
fn snapshots_that_refer_to_lost_data_are_repaired_and_the_originals_forgotten() {
    let fixture = Fixture::new();
    std::fs::write(fixture.path().join("later"), b"a later file").unwrap();
    fixture.snapshot().unwrap();
    let pack = fixture.data_pack();
    fixture.backend.delete(FileKind::Pack, &pack.0).unwrap();
    let before = fixture.verify(false);
    let lost = damaged_paths(&before);
    assert!(!lost.is_empty());

    fixture.rebuild(false);
    let repo = fixture.indexed();
    let repaired = crate::repair::repair_snapshots(&repo, 2).unwrap();
    assert_eq!(repaired.len(), 2);
    for snapshot in &repaired {
        let removed: Vec<&String> = snapshot.removed.iter().map(|r| &r.path).collect();
        assert_eq!(removed.len(), lost.len() / 2, "{removed:?}");
        assert!(snapshot.repaired.is_some());
    }
    // The repaired snapshots are whole; the originals are forgotten but
    // still there, and come back when recalled.
    let report = fixture.verify(true);
    assert!(!report.is_damaged(), "{:?}", report.problems);
    assert_eq!(report.snapshots, 2);
    // The forgotten originals are checked too, and reported apart.
    assert_eq!(report.forgotten_snapshots, 2);
    assert_eq!(report.damaged_forgotten.len(), 2);
    let repo = fixture.open();
    let forgotten = repo.forgotten().unwrap();
    assert_eq!(forgotten.len(), 2);
    assert!(repo
        .snapshots()
        .unwrap()
        .iter()
        .all(|(_, s)| s.tags.contains(&crate::repair::REPAIRED_TAG.to_string())));
    repo.recall(&repaired[0].original).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 3);
    assert!(fixture.verify(false).is_damaged());
}

#[test]
fn a_slow_restore_meeting_a_lost_pack_names_those_files_and_restores_the_rest() {
    let fixture = Fixture::new();
    let lost = fixture.large_blob().pack;
    fixture.backend.delete(FileKind::Pack, &lost.0).unwrap();
    // Every read is slow too: the restore must not time out or give up.
    fixture
        .backend
        .set_delay(std::time::Duration::from_millis(1));
    let repo = fixture.indexed();
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let target = tempfile::tempdir().unwrap();
    let report = crate::restorer::restore(
        &repo,
        &snapshot.tree,
        target.path(),
        &crate::restorer::RestoreOptions::default(),
        &crate::restorer::RestoreProgress::default(),
    )
    .unwrap();
    assert!(!report.damaged.is_empty());
    let restored = target
        .path()
        .join(fixture.path().strip_prefix("/").unwrap());
    let mut whole = 0;
    for entry in std::fs::read_dir(fixture.path()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = report.damaged.iter().any(|d| d.contains(&name));
        if !named {
            let got = std::fs::read(restored.join(&name)).unwrap();
            assert_eq!(got, std::fs::read(entry.path()).unwrap(), "{name}");
            whole += 1;
        }
    }
    assert!(whole >= 8, "{:?}", report.damaged);
}
