//! Restoring into a target that already holds things, some of them hostile:
//! nothing outside the target ever changes, conflicts are named, and the
//! overwrite policies and --delete do what they say.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mapache_store::snapshot::{Snapshot, SnapshotSource};
use mapache_store::tree::{Node, NodeKind, Tree};
use mapache_store::{BlobSaver, BlobType};

use crate::util::{stderr, Env};

/// Every entry below `dir` (and `dir` itself) with its type, mode, owner,
/// size and content: what must not change.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u32, u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            fs::read(&path).unwrap()
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        out.insert(path, (meta.mode(), meta.uid(), meta.len(), content));
    }
    out
}

struct Scene {
    env: Env,
    source: PathBuf,
    outside: PathBuf,
    target: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let env = Env::with_repo();
        let source = env.path("source");
        fs::create_dir_all(&source).unwrap();
        let outside = env.path("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), "precious").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        let target = env.path("target");
        Scene {
            env,
            source,
            outside,
            target,
        }
    }

    fn snapshot(&self) -> String {
        self.env.snapshot(&self.source)["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Restores and returns the exit code and stderr.
    fn restore(&self, snapshot: &str, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec![
            "restore",
            snapshot,
            "--target",
            self.target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = self.env.run(&args);
        (out.status.code(), stderr(&out))
    }

    /// Where the source lands in the target.
    fn restored(&self) -> PathBuf {
        self.target.join(self.source.strip_prefix("/").unwrap())
    }
}

#[test]
fn a_symlink_then_a_folder_of_the_same_name_never_writes_outside() {
    let scene = Scene::new();
    let before = fingerprint(&scene.outside);
    let link = scene.source.join("link");
    symlink(&scene.outside, &link).unwrap();
    let first = scene.snapshot();
    fs::remove_file(&link).unwrap();
    fs::create_dir(&link).unwrap();
    fs::write(link.join("victim"), "overwritten").unwrap();
    fs::set_permissions(link.join("victim"), fs::Permissions::from_mode(0o4777)).unwrap();
    fs::set_permissions(&link, fs::Permissions::from_mode(0o777)).unwrap();
    let second = scene.snapshot();

    assert_eq!(scene.restore(&first, &[]).0, Some(0));
    assert!(fs::symlink_metadata(scene.restored().join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let (code, err) = scene.restore(&second, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fingerprint(&scene.outside),
        before,
        "something outside the target changed"
    );
    // The symlink was replaced by the folder, which holds the file.
    let restored = scene.restored().join("link");
    assert!(fs::symlink_metadata(&restored).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(restored.join("victim")).unwrap(),
        "overwritten"
    );
}

#[test]
fn a_crafted_tree_with_a_symlink_and_a_folder_of_one_name_never_writes_outside() {
    let scene = Scene::new();
    let before = fingerprint(&scene.outside);
    // Two entries named `link`: a symlink to the outside and a folder.
    let repo = Arc::new(scene.env.open_repo());
    let saver = BlobSaver::new(repo.clone(), 1);
    let mut victim = Node::new(b"victim", NodeKind::File);
    victim.mode = 0o4777;
    victim.size = 5;
    victim.content = vec![saver.save(BlobType::Data, b"owned".to_vec()).unwrap()];
    let inner = saver
        .save(
            BlobType::Tree,
            Tree {
                nodes: vec![victim],
            }
            .encode(),
        )
        .unwrap();
    let mut link = Node::new(b"link", NodeKind::Symlink);
    link.link_target = scene.outside.as_os_str().as_encoded_bytes().to_vec();
    let mut folder = Node::new(b"link", NodeKind::Dir);
    folder.mode = 0o777;
    folder.subtree = Some(inner);
    for nodes in [vec![link.clone(), folder.clone()], vec![folder, link]] {
        let root = saver.save(BlobType::Tree, Tree { nodes }.encode()).unwrap();
        saver.flush().unwrap();
        let snapshot = Snapshot::new("crafted", vec!["/".into()], root, SnapshotSource::Scan);
        let id = repo.save_snapshot(&snapshot).unwrap();
        let (code, err) = scene.restore(&id.to_hex(), &[]);
        assert!(code == Some(0) || code == Some(3), "{err}");
        assert_eq!(
            fingerprint(&scene.outside),
            before,
            "something outside the target changed"
        );
    }
}

#[test]
fn symlinks_in_the_target_are_replaced_never_followed() {
    let scene = Scene::new();
    let before = fingerprint(&scene.outside);
    fs::create_dir_all(scene.source.join("dir")).unwrap();
    fs::write(scene.source.join("dir/file"), "inside").unwrap();
    fs::write(scene.source.join("file"), "data").unwrap();
    fs::create_dir_all(scene.source.join("a")).unwrap();
    fs::write(scene.source.join("a/deep"), "deep").unwrap();
    let id = scene.snapshot();
    let restored = scene.restored();
    fs::create_dir_all(&restored).unwrap();
    // A symlink where the snapshot has a folder, one where it has a file,
    // and a chain of symlinks inside the target leading out.
    symlink(&scene.outside, restored.join("dir")).unwrap();
    symlink(scene.outside.join("victim"), restored.join("file")).unwrap();
    symlink(restored.join("b"), restored.join("a")).unwrap();
    symlink(&scene.outside, restored.join("b")).unwrap();
    let (code, err) = scene.restore(&id, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fingerprint(&scene.outside),
        before,
        "something outside the target changed"
    );
    assert_eq!(
        fs::read_to_string(restored.join("dir/file")).unwrap(),
        "inside"
    );
    assert_eq!(fs::read_to_string(restored.join("file")).unwrap(), "data");
    assert_eq!(fs::read_to_string(restored.join("a/deep")).unwrap(), "deep");
    assert!(!fs::symlink_metadata(restored.join("dir"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A file replaced by a symlink between two restores.
    fs::remove_file(restored.join("file")).unwrap();
    symlink(scene.outside.join("victim"), restored.join("file")).unwrap();
    let (code, err) = scene.restore(&id, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fingerprint(&scene.outside), before);
    assert!(fs::symlink_metadata(restored.join("file"))
        .unwrap()
        .is_file());
}

#[test]
fn a_folder_with_content_where_the_snapshot_has_a_symlink_is_a_named_conflict() {
    let scene = Scene::new();
    symlink("somewhere", scene.source.join("entry")).unwrap();
    fs::write(scene.source.join("other"), "other").unwrap();
    let id = scene.snapshot();
    let restored = scene.restored();
    fs::create_dir_all(restored.join("entry")).unwrap();
    fs::write(restored.join("entry/mine"), "keep me").unwrap();
    let (code, err) = scene.restore(&id, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("entry") && err.contains("--delete"), "{err}");
    assert_eq!(
        fs::read_to_string(restored.join("entry/mine")).unwrap(),
        "keep me"
    );
    assert_eq!(fs::read_to_string(restored.join("other")).unwrap(), "other");
    let (code, err) = scene.restore(&id, &["--delete"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(fs::symlink_metadata(restored.join("entry"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The target prepared with the previous restore and then: an edited file
/// (same size), a newer and an older changed file, a missing file, an extra
/// file and an extra folder.
fn prepared(scene: &Scene, id: &str) -> PathBuf {
    let _ = fs::remove_dir_all(&scene.target);
    assert_eq!(scene.restore(id, &[]).0, Some(0));
    let r = scene.restored();
    fs::write(r.join("edited"), "EDITED!").unwrap();
    fs::write(r.join("newer"), "newer locally").unwrap();
    fs::write(r.join("older"), "older locally").unwrap();
    let set_mtime = |name: &str, secs: i64| {
        let t = nix::sys::time::TimeSpec::new(secs, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &r.join(name),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    };
    set_mtime("newer", 4_000_000_000);
    set_mtime("older", 1_000_000_000);
    fs::remove_file(r.join("missing")).unwrap();
    fs::write(r.join("extra"), "extra").unwrap();
    fs::create_dir_all(r.join("extra-dir/sub")).unwrap();
    fs::write(r.join("extra-dir/sub/f"), "f").unwrap();
    r
}

#[test]
fn every_overwrite_policy_with_and_without_delete() {
    let scene = Scene::new();
    for name in ["edited", "newer", "older", "missing", "same"] {
        fs::write(scene.source.join(name), format!("{name} original")).unwrap();
    }
    // The snapshot's versions are from 2020: "newer" is newer locally,
    // "older" older.
    for name in ["edited", "newer", "older", "missing", "same"] {
        let t = nix::sys::time::TimeSpec::new(1_600_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &scene.source.join(name),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    let id = scene.snapshot();
    let original = |name: &str| format!("{name} original");
    // (policy, which of edited/newer/older end up original)
    let table = [
        ("always", [true, true, true]),
        ("if-changed", [true, true, true]),
        ("if-newer", [false, false, true]),
        ("never", [false, false, false]),
    ];
    for (policy, expected) in table {
        for delete in [false, true] {
            let r = prepared(&scene, &id);
            let mut extra = vec!["--overwrite", policy];
            if delete {
                extra.push("--delete");
            }
            // A dry run first: it changes nothing and lists the plan.
            let mut dry = extra.clone();
            dry.push("--dry-run");
            let before = fingerprint(&scene.target);
            let mut args = vec![
                "restore",
                id.as_str(),
                "--target",
                scene.target.to_str().unwrap(),
            ];
            args.extend_from_slice(&dry);
            let plan = scene.env.ok(&args);
            assert_eq!(
                fingerprint(&scene.target),
                before,
                "{policy} {delete}: the dry run changed something"
            );
            assert!(
                plan.contains("create") && plan.contains("missing"),
                "{plan}"
            );
            assert_eq!(plan.contains("delete"), delete, "{plan}");

            let (code, err) = scene.restore(&id, &extra);
            assert_eq!(code, Some(0), "{policy} {delete}: {err}");
            for (name, want_original) in ["edited", "newer", "older"].into_iter().zip(expected) {
                let got = fs::read_to_string(r.join(name)).unwrap();
                assert_eq!(
                    got == original(name),
                    want_original,
                    "{policy} {delete}: {name} = {got:?}"
                );
            }
            assert_eq!(
                fs::read_to_string(r.join("missing")).unwrap(),
                original("missing")
            );
            assert_eq!(
                fs::read_to_string(r.join("same")).unwrap(),
                original("same")
            );
            assert_eq!(r.join("extra").exists(), !delete, "{policy} {delete}");
            assert_eq!(r.join("extra-dir").exists(), !delete, "{policy} {delete}");
            let leftovers: Vec<_> = fs::read_dir(&r)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().ends_with(".mapache-restore"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }
}

#[test]
fn patterns_that_match_nothing_are_warned_about_and_sub_paths_restore_alone() {
    let scene = Scene::new();
    fs::create_dir_all(scene.source.join("docs/deep")).unwrap();
    fs::write(scene.source.join("docs/deep/a.txt"), "a").unwrap();
    fs::write(scene.source.join("top.txt"), "top").unwrap();
    let id = scene.snapshot();
    let (code, err) = scene.restore(&id, &["--include", "*.nomatch"]);
    assert_eq!(code, Some(0));
    assert!(
        err.contains("--include \"*.nomatch\" matched nothing"),
        "{err}"
    );
    let sub = format!("{id}:{}/docs", scene.source.display());
    let (code, err) = scene.restore(&sub, &["--iinclude", "A.TXT"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fs::read_to_string(scene.target.join("deep/a.txt")).unwrap(),
        "a"
    );
}

#[test]
fn a_restore_killed_midway_leaves_no_incomplete_file_under_its_name_and_a_rerun_finishes() {
    let scene = Scene::new();
    for i in 0..24 {
        crate::util::write_random_file(&scene.source.join(format!("f{i:02}")), 4 << 20, i);
    }
    let id = scene.snapshot();
    let restored = scene.restored();
    for delay_ms in [150u64, 400] {
        let _ = fs::remove_dir_all(&scene.target);
        let mut child = scene
            .env
            .command(&["restore", &id, "--target", scene.target.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever carries its own name is complete.
        if let Ok(entries) = fs::read_dir(&restored) {
            for entry in entries {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".mapache-restore") {
                    continue;
                }
                assert_eq!(
                    fs::read(entry.path()).unwrap(),
                    fs::read(scene.source.join(&name)).unwrap(),
                    "{name} is under its name but incomplete"
                );
            }
        }
        let (code, err) = scene.restore(&id, &["--verify"]);
        assert_eq!(code, Some(0), "{err}");
        crate::util::assert_same_tree(&scene.source, &restored);
    }
}
