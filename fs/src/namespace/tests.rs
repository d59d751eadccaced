//! The namespace over a real (in-memory) repository.

use std::sync::Arc;

use mapache_store::archiver::{self, ArchiveOptions, Progress};
use mapache_store::backend::{Backend, MemoryBackend};
use mapache_store::Config;
use mapache_store::KdfParams;
use mapache_store::Repository;

use super::*;
use crate::{BlobCache, FileContent};

fn repo_with_snapshot(dir: &std::path::Path) -> Arc<IndexedRepository> {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let mut config = Config::new();
    config.chunker = mapache_store::ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
    };
    let repo = Repository::init(backend, b"pw", KdfParams::insecure_fast(), config).unwrap();
    let repo = Arc::new(repo.load_index().unwrap());
    let options = ArchiveOptions {
        tags: vec!["daily".into()],
        ..ArchiveOptions::default()
    };
    archiver::snapshot(
        repo.clone(),
        &[dir.to_path_buf()],
        &options,
        &Progress::default(),
    )
    .unwrap();
    repo
}

/// Follows a path of names from the root.
fn walk(ns: &Namespace, path: &[&[u8]]) -> Attr {
    let mut ino = ROOT;
    let mut attr = ns.getattr(ROOT).unwrap();
    for name in path {
        attr = ns.lookup(ino, name).unwrap();
        ino = attr.ino;
    }
    attr
}

#[test]
fn browse_read_and_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("data"), &data).unwrap();
    std::fs::hard_link(src.join("data"), src.join("link")).unwrap();
    std::os::unix::fs::symlink("data", src.join("sym")).unwrap();
    let repo = repo_with_snapshot(&src);
    let ns = Namespace::new(repo.clone(), 0, 0);

    let root: Vec<Vec<u8>> = ns
        .readdir(ROOT)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        root,
        [&b"snapshots"[..], b"ids", b"latest", b"tags", b"hosts"]
    );
    let latest = ns.lookup(ROOT, b"latest").unwrap();
    assert_eq!(latest.kind, NodeKind::Symlink);
    assert!(ns.readlink(latest.ino).unwrap().starts_with(b"snapshots/"));
    assert_eq!(
        ns.readdir(walk(&ns, &[b"tags"]).ino).unwrap()[0].name,
        b"daily"
    );

    let snapshots = ns.readdir(walk(&ns, &[b"snapshots"]).ino).unwrap();
    assert_eq!(snapshots.len(), 1);
    let mut path: Vec<&[u8]> = vec![b"snapshots", &snapshots[0].name];
    let components: Vec<Vec<u8>> = src
        .iter()
        .skip(1)
        .map(|c| std::os::unix::ffi::OsStrExt::as_bytes(c).to_vec())
        .collect();
    path.extend(components.iter().map(|c| c.as_slice()));
    let folder = walk(&ns, &path);
    assert_eq!(folder.kind, NodeKind::Dir);
    let names: Vec<Vec<u8>> = ns
        .readdir(folder.ino)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [&b"data"[..], b"link", b"sym"]);

    let file = ns.lookup(folder.ino, b"data").unwrap();
    let link = ns.lookup(folder.ino, b"link").unwrap();
    assert_eq!(file.ino, link.ino, "hard links share an inode number");
    assert_eq!(file.nlink, 2);
    assert_eq!(
        ns.lookup(folder.ino, b"data").unwrap().ino,
        file.ino,
        "stable numbers"
    );
    let sym = ns.lookup(folder.ino, b"sym").unwrap();
    assert_eq!(ns.readlink(sym.ino).unwrap(), b"data");
    assert!(matches!(
        ns.lookup(folder.ino, b"nope"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(ns.readdir(file.ino), Err(FsError::NotDir)));

    // The file was handed out three times (data, link, data again). Once
    // the kernel has forgotten all three, it and then its folder leave the
    // table; looked up again, both come back under the same numbers.
    let before = (
        ns.getattr(file.ino).unwrap(),
        ns.readdir(folder.ino).unwrap(),
    );
    ns.forget(file.ino, 2);
    assert_eq!(ns.getattr(file.ino).unwrap(), before.0, "one lookup left");
    ns.forget(file.ino, 1);
    assert!(matches!(ns.getattr(file.ino), Err(FsError::NotFound)));
    ns.forget(folder.ino, 1);
    assert!(matches!(ns.getattr(folder.ino), Err(FsError::NotFound)));
    let held = ns.table.lock().entries.len();
    assert_eq!(walk(&ns, &path).ino, folder.ino);
    assert_eq!(ns.lookup(folder.ino, b"link").unwrap().ino, file.ino);
    assert_eq!(ns.getattr(file.ino).unwrap(), before.0);
    assert_eq!(ns.readdir(folder.ino).unwrap(), before.1);
    assert_eq!(ns.table.lock().entries.len(), held + 2);

    let content = FileContent::new(&repo, &ns.file(file.ino).unwrap()).unwrap();
    assert_eq!(content.len(), data.len() as u64);
    let cache = BlobCache::new(repo, 1 << 20, 1);
    for (offset, size) in [
        (0u64, 100u32),
        (1000, 2000),
        (70_000, 50_000),
        (299_990, 100),
        (400_000, 10),
    ] {
        let got = content.read(&cache, offset, size).unwrap();
        let start = (offset as usize).min(data.len());
        let end = (offset as usize + size as usize).min(data.len());
        assert_eq!(got, &data[start..end], "read at {offset}");
        // Within one blob or across several, handed over as they are.
        let mut out = Vec::new();
        let handed = content.read_with(&cache, offset, size, &mut out, <[u8]>::to_vec);
        assert_eq!(handed.unwrap(), &data[start..end], "read_with at {offset}");
    }
}

/// A namespace showing a fresh staging area of `repo`, kept in `state`.
fn with_staging(repo: Arc<IndexedRepository>, state: &std::path::Path) -> Namespace {
    let staging = crate::staging::Staging::open(repo.clone(), state).unwrap();
    Namespace::new(repo, 0, 0).with_staging(Arc::new(staging))
}

#[test]
fn staged_inode_numbers_are_the_entries_themselves() {
    use crate::staging::{meta_now, RenameMode, StageRequest};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let repo = repo_with_snapshot(&src);
    let ns = with_staging(repo, &dir.path().join("state"));
    let staging = walk(&ns, &[b"staging"]).ino;

    let a = ns.mkdir(staging, b"a", meta_now(0o755), 0o022).unwrap();
    let f = ns.create(a.ino, b"f", meta_now(0o644), 0o022).unwrap();
    let file = ns.open_staged(f.ino).unwrap();
    ns.write(&file, 0, b"first").unwrap();
    assert_eq!(ns.getattr(a.ino).unwrap().nlink, 2);

    // A folder moved keeps its number and so does what it holds; the open
    // file writes on under its new path.
    ns.mkdir(staging, b"b", meta_now(0o755), 0o022).unwrap();
    ns.rename(staging, b"a", staging, b"moved", RenameMode::Replace)
        .unwrap();
    let b = ns.lookup(staging, b"b").unwrap();
    ns.rename(staging, b"moved", b.ino, b"a", RenameMode::Replace)
        .unwrap();
    assert_eq!(ns.getattr(b.ino).unwrap().nlink, 3, "b holds a folder");
    assert_eq!(ns.lookup(b.ino, b"a").unwrap().ino, a.ino);
    assert_eq!(ns.lookup(a.ino, b"f").unwrap().ino, f.ino);
    ns.write(&file, 5, b" second").unwrap();
    let staged = ns.staging().unwrap();
    let at_new_path = staged.resolve(b"b/a/f").unwrap();
    assert_eq!(staged.read(&at_new_path, 0, 100).unwrap(), b"first second");

    // A second name shares the number; removing the folder that holds the
    // first-known name leaves it with the surviving one.
    let g = ns.link(f.ino, staging, b"g").unwrap();
    assert_eq!((g.ino, g.nlink), (f.ino, 2));
    ns.setattr(
        f.ino,
        SetAttr {
            size: Some(5),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let answer = ns.stage_request(StageRequest::Remove {
        paths: vec![b"b".to_vec()],
        recursive: true,
    });
    answer.unwrap();
    let g = ns.lookup(staging, b"g").unwrap();
    assert_eq!((g.ino, g.nlink, g.size), (f.ino, 1, 5));
    assert!(matches!(ns.getattr(a.ino), Err(FsError::NotFound)));
    assert!(matches!(
        ns.mkdir(a.ino, b"in-removed", meta_now(0o755), 0o022),
        Err(FsError::NotFound)
    ));

    // Unlinked while open: reachable by its number, without links, until
    // the kernel forgets it.
    ns.unlink(staging, b"g").unwrap();
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 0);
    ns.write(&file, 0, b"still").unwrap();
    assert_eq!(ns.read(&file, 0, 5).unwrap(), b"still");
    assert!(matches!(ns.lookup(staging, b"g"), Err(FsError::NotFound)));
    // Handed out by create, link and two lookups.
    ns.forget(f.ino, 3);
    assert_eq!(ns.getattr(f.ino).unwrap().nlink, 0);
    ns.forget(f.ino, 1);
    drop(file);
    assert!(matches!(ns.getattr(f.ino), Err(FsError::NotFound)));

    // Entries leave the table when the kernel forgets them, and come back
    // under the same number while they live.
    let c = ns.create(staging, b"c", meta_now(0o644), 0o022).unwrap();
    let held = ns.table.lock().entries.len();
    ns.forget(c.ino, 1);
    assert_eq!(ns.table.lock().entries.len(), held - 1);
    assert!(matches!(ns.getattr(c.ino), Err(FsError::NotFound)));
    assert_eq!(ns.lookup(staging, b"c").unwrap().ino, c.ino);

    // A reset drops every entry; `staging/` stays, showing the new tree.
    let answer = ns.stage_request(StageRequest::Reset {
        base: crate::staging::ResetTo::Empty,
    });
    answer.unwrap();
    assert!(matches!(ns.getattr(c.ino), Err(FsError::NotFound)));
    assert!(ns.readdir(staging).unwrap().is_empty());
    assert_eq!(ns.getattr(staging).unwrap().nlink, 2);
}
