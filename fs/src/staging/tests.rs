//! Staging against a plain folder: the same random operations applied to
//! both must give the same tree after every commit, and after a reopen
//! (the process "crashed" without any checkpoint).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mapache_store::backend::{Backend, MemoryBackend};
use mapache_store::restorer::{self, RestoreOptions, RestoreProgress};
use mapache_store::ChunkerParams;
use mapache_store::Config;
use mapache_store::KdfParams;
use mapache_store::{IndexedRepository, Repository};

use super::{meta_now, RenameMode, Staging, INLINE_MAX};

fn repo() -> Arc<IndexedRepository> {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let mut config = Config::new();
    config.chunker = ChunkerParams {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
    };
    config.pack_size = 64 * 1024;
    let repo = Repository::init(backend, b"pw", KdfParams::insecure_fast(), config).unwrap();
    Arc::new(repo.load_index().unwrap())
}

/// Reads a folder into path → content (None for folders).
fn snapshot_of(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    out
}

fn restore_latest(repo: &IndexedRepository, target: &Path) {
    let (_, snapshot) = repo.find_snapshot("latest").unwrap();
    let report = restorer::restore(
        repo,
        &snapshot.tree,
        target,
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
    .unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
}

/// A tiny deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operations_match_a_plain_folder() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0x1234_5678_9abc_def1, 42, 7_777_777] {
        random_operations(seed);
    }
}

/// Applies random operations to a staging and to a plain folder; after
/// every operation each file reads the same through both, and after every
/// commit the restored snapshot equals the folder.
fn random_operations(seed: u64) {
    let repo = repo();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let state = work.path().join("state");
    let mut staging = Staging::open(repo.clone(), &state).unwrap();
    let names = ["a", "b", "c", "d/e", "d/f", "d/g/h", "x/y"];
    let mut rng = Rng(seed);
    for round in 0..12 {
        for _ in 0..25 {
            let path = names[rng.below(names.len() as u64) as usize];
            let other = names[rng.below(names.len() as u64) as usize];
            let m = model.join(path);
            let p = path.as_bytes();
            let choice = rng.below(8);
            match choice {
                0 => {
                    // mkdir -p of the parent, then create or overwrite
                    if let Some(parent) = Path::new(path)
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                    {
                        let mut built = String::new();
                        for part in parent.iter() {
                            if !built.is_empty() {
                                built.push('/');
                            }
                            built.push_str(&part.to_string_lossy());
                            if std::fs::create_dir(model.join(&built)).is_ok() {
                                staging.mkdir(built.as_bytes(), meta_now(0o755)).unwrap();
                            }
                        }
                    }
                    if m.is_dir() {
                        continue;
                    }
                    let len = rng.below(40_000) as usize;
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + round) as u8).collect();
                    let exists = m.is_file();
                    if std::fs::write(&m, &data).is_err() {
                        continue;
                    }
                    if !exists {
                        staging.create(p, meta_now(0o644)).unwrap();
                    }
                    let file = staging.resolve(p).unwrap();
                    staging.truncate(&file, 0).unwrap();
                    staging.writer(&file, true).unwrap();
                    staging.write(&file, 0, &data).unwrap();
                    staging.writer(&file, false).unwrap();
                }
                1 if m.is_file() => {
                    // overwrite in the middle, extending maybe
                    let offset = rng.below(50_000);
                    let patch = vec![b'#'; rng.below(5000) as usize + 1];
                    use std::os::unix::fs::FileExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&m)
                        .unwrap()
                        .write_all_at(&patch, offset)
                        .unwrap();
                    let file = staging.resolve(p).unwrap();
                    staging.write(&file, offset, &patch).unwrap();
                }
                2 if m.is_file() => {
                    let size = rng.below(30_000);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&m)
                        .unwrap()
                        .set_len(size)
                        .unwrap();
                    let file = staging.resolve(p).unwrap();
                    staging.truncate(&file, size).unwrap();
                }
                3 => {
                    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
                    let (flags, mode) = match rng.below(3) {
                        0 => (RenameFlags::empty(), RenameMode::Replace),
                        1 => (RenameFlags::RENAME_NOREPLACE, RenameMode::NoReplace),
                        _ => (RenameFlags::RENAME_EXCHANGE, RenameMode::Exchange),
                    };
                    let plain = renameat2(AT_FDCWD, &m, AT_FDCWD, &model.join(other), flags);
                    let staged = staging.rename(p, other.as_bytes(), mode);
                    assert_eq!(
                        plain.is_ok(),
                        staged.is_ok(),
                        "rename {path} {other}: {plain:?} {staged:?}"
                    );
                }
                4 if m.is_file() => {
                    std::fs::remove_file(&m).unwrap();
                    staging.remove(p, false).unwrap();
                }
                5 if m.is_dir() => {
                    let plain = std::fs::remove_dir(&m);
                    let staged = staging.remove(p, false);
                    assert_eq!(plain.is_ok(), staged.is_ok(), "rmdir {path}");
                }
                6 if m.is_file() => {
                    let plain = std::fs::hard_link(&m, model.join(other));
                    let staged = staging.link(p, other.as_bytes());
                    assert_eq!(plain.is_ok(), staged.is_ok(), "link {path} {other}");
                }
                7 => {
                    // "crash": drop without checkpoint and reopen
                    drop(staging);
                    staging = Staging::open(repo.clone(), &state).unwrap();
                }
                _ => {}
            }
            for (rel, content) in snapshot_of(&model) {
                if let Some(content) = content {
                    let staged = staging
                        .resolve(rel.as_bytes())
                        .and_then(|file| staging.read(&file, 0, 1 << 24))
                        .unwrap_or_else(|e| panic!("{rel} after op {choice} {path} {other} in round {round}, seed {seed}: {e:?}"));
                    assert_eq!(staged.len(), content.len(), "{rel} diverged after op {choice} {path} {other} in round {round}, seed {seed}");
                }
            }
        }
        staging
            .commit(&request(format!("round {round}"), false))
            .unwrap();
        let target = work.path().join(format!("restore-{round}"));
        restore_latest(&repo, &target);
        let restored_root = target.clone();
        let (want, got) = (snapshot_of(&model), snapshot_of(&restored_root));
        for (path, content) in &want {
            let other = got.get(path);
            assert_eq!(
                Some(content).map(|c| c.as_ref().map(Vec::len)),
                other.map(|c| c.as_ref().map(Vec::len)),
                "{path} after round {round}, seed {seed}"
            );
        }
        assert_eq!(want, got, "after round {round}, seed {seed}");
    }
}

#[test]
fn second_open_is_refused_while_the_first_holds_it() {
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let first = Staging::open(repo.clone(), dir.path()).unwrap();
    assert!(matches!(
        Staging::open(repo.clone(), dir.path()),
        Err(crate::FsError::Busy(_))
    ));
    drop(first);
    Staging::open(repo, dir.path()).unwrap();
}

#[test]
fn a_file_written_during_its_upload_keeps_the_newer_content() {
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(repo.clone(), &dir.path().join("state")).unwrap();
    let older: Vec<u8> = (0..2 * INLINE_MAX as usize).map(|i| i as u8).collect();
    let newer = b"written while the upload ran".to_vec();
    staging.create(b"f", meta_now(0o644)).unwrap();
    let f = staging.resolve(b"f").unwrap();
    staging.writer(&f, true).unwrap();
    staging.write(&f, 0, &older).unwrap();
    staging.writer(&f, false).unwrap();

    // The batch stores the older bytes; the file changes before it ends.
    let mut batch = staging.start_batch(staging.inner.lock()).unwrap();
    assert!(staging.chunk_batch(&mut batch).is_none());
    staging.writer(&f, true).unwrap();
    staging.truncate(&f, 0).unwrap();
    staging.write(&f, 0, &newer).unwrap();
    staging.writer(&f, false).unwrap();
    staging.finish_batch(batch, None).unwrap();
    // The stale upload was not recorded: the newer bytes are still there.
    assert_eq!(staging.read(&f, 0, 1 << 24).unwrap(), newer);

    staging.commit(&request("newer", false)).unwrap();
    let target = dir.path().join("restored");
    restore_latest(&repo, &target);
    assert_eq!(std::fs::read(target.join("f")).unwrap(), newer);
}

#[test]
fn a_file_unlinked_before_its_upload_is_never_uploaded() {
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let staging = Staging::open(repo.clone(), &state).unwrap();
    let mut rng = Rng(7);
    let bytes: Vec<u8> = (0..2 * INLINE_MAX).map(|_| rng.next() as u8).collect();
    staging.create(b"kept", meta_now(0o644)).unwrap();
    staging.create(b"temp", meta_now(0o644)).unwrap();
    let temp = staging.resolve(b"temp").unwrap();
    staging.writer(&temp, true).unwrap();
    staging.write(&temp, 0, &bytes).unwrap();
    staging.writer(&temp, false).unwrap();
    drop(temp);
    staging.remove(b"temp", false).unwrap();
    let local_files = || std::fs::read_dir(state.join("data")).unwrap().count();
    assert_eq!(local_files(), 1);

    staging.commit(&request("without temp", false)).unwrap();
    // Two megabytes of random bytes would be hundreds of blobs; only the
    // root tree was stored. The local copy is gone too.
    assert_eq!(repo.index().len(), 1);
    assert_eq!(local_files(), 0);
    let target = dir.path().join("restored");
    restore_latest(&repo, &target);
    assert_eq!(snapshot_of(&target).len(), 1);
}

#[test]
fn a_commit_of_nothing_new_writes_no_snapshot_unless_allowed() {
    use super::Committed;
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(repo.clone(), &dir.path().join("state")).unwrap();
    // A new repository and nothing staged.
    let empty = staging.commit(&request("empty", false)).unwrap();
    assert!(matches!(empty, Committed::NothingToCommit { base: None }));
    assert!(repo.snapshots().unwrap().is_empty());

    staging.create(b"f", meta_now(0o644)).unwrap();
    let Committed::Snapshot(first, _) = staging.commit(&request("first", false)).unwrap() else {
        panic!("a staged file makes a snapshot");
    };
    let again = staging.commit(&request("again", false)).unwrap();
    assert!(matches!(again, Committed::NothingToCommit { base: Some(b) } if b == first));
    assert_eq!(repo.snapshots().unwrap().len(), 1);

    // A change undone is no change.
    staging.create(b"g", meta_now(0o644)).unwrap();
    staging.remove(b"g", false).unwrap();
    let undone = staging.commit(&request("undone", false)).unwrap();
    assert!(matches!(undone, Committed::NothingToCommit { .. }));
    let forced = staging.commit(&request("forced", true)).unwrap();
    assert!(matches!(forced, Committed::Snapshot(..)));
    assert_eq!(repo.snapshots().unwrap().len(), 2);
}

/// A commit request of `description` from host "test".
fn request(description: impl Into<String>, allow_empty: bool) -> super::CommitRequest {
    super::CommitRequest {
        description: description.into(),
        tags: Vec::new(),
        host: "test".into(),
        allow_empty,
    }
}
