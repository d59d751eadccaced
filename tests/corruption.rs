//! The corruption matrix: every kind of repository file, damaged each way,
//! through the real binary. `verify` finds and names the damage, no
//! command restores wrong content with exit 0, what is not affected still
//! restores, and after `rebuild-index` a new snapshot restores exactly.

use std::fs;
use std::path::{Path, PathBuf};

use mapache_store::BlobType;

use crate::util::{assert_same_tree, write_random_file, Env};

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    Truncate,
    Delete,
    Garbage,
}

const DAMAGES: [Damage; 4] = [
    Damage::FlipByte,
    Damage::Truncate,
    Damage::Delete,
    Damage::Garbage,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Config,
    Key,
    Snapshot,
    Index,
    DataPack,
    TreePack,
    Lock,
}

/// A repository with two snapshots of two versions of a tree, made once
/// per test and copied for each case.
struct Pristine {
    env: Env,
    sources: [PathBuf; 2],
    snapshots: [String; 2],
}

impl Pristine {
    fn new() -> Pristine {
        let env = Env::with_repo();
        let first = env.path("v1");
        fs::create_dir_all(first.join("sub")).unwrap();
        for i in 0..12u64 {
            write_random_file(
                &first.join(format!("f{i:02}")),
                50_000 + 40_000 * i as usize,
                i,
            );
        }
        write_random_file(&first.join("sub/large"), 3 << 20, 99);
        fs::write(first.join("sub/text"), "some text\n".repeat(1000)).unwrap();
        let second = env.path("v2");
        crate::util::sh(&format!("cp -a {} {}", first.display(), second.display()));
        write_random_file(&second.join("f03"), 70_000, 1003);
        write_random_file(&second.join("new"), 200_000, 1004);
        let ids =
            [&first, &second].map(|dir| env.snapshot(dir)["id"].as_str().unwrap().to_string());
        Pristine {
            env,
            sources: [first, second],
            snapshots: ids,
        }
    }

    /// A fresh copy of the repository in a new scratch folder.
    fn copy(&self) -> Env {
        let env = Env::new();
        crate::util::sh(&format!(
            "cp -a {} {}",
            self.env.repo.display(),
            env.repo.display()
        ));
        env
    }
}

/// The file of `kind` to damage in `env`'s repository.
fn target(env: &Env, pristine: &Pristine, kind: Kind) -> PathBuf {
    let repo = &env.repo;
    let first_in = |dir: &str| {
        let mut files: Vec<PathBuf> = fs::read_dir(repo.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.remove(0)
    };
    let pack_of = |blob_type: BlobType| {
        let opened = env.open_repo();
        let index = opened.index();
        let (_, location) = index
            .iter()
            .find(|(_, l)| l.blob_type == blob_type)
            .unwrap();
        let hex = location.pack.to_hex();
        repo.join("packs").join(&hex[..2]).join(hex)
    };
    match kind {
        Kind::Config => repo.join("config"),
        Kind::Key => first_in("keys"),
        Kind::Snapshot => {
            let name = &pristine.snapshots[0];
            let found = fs::read_dir(repo.join("snapshots"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(name.as_str())
                });
            found.unwrap()
        }
        Kind::Index => first_in("index"),
        Kind::DataPack => pack_of(BlobType::Data),
        Kind::TreePack => pack_of(BlobType::Tree),
        Kind::Lock => {
            // A lock left by a process that is still running (this one).
            let opened = env.open_repo();
            std::mem::forget(opened.lock(false).unwrap());
            first_in("locks")
        }
    }
}

fn damage(path: &Path, how: Damage) {
    let bytes = fs::read(path).unwrap();
    match how {
        Damage::FlipByte => {
            let mut bytes = bytes;
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            fs::write(path, bytes).unwrap();
        }
        Damage::Truncate => fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Delete => fs::remove_file(path).unwrap(),
        Damage::Garbage => {
            fs::write(path, crate::util::random_bytes(bytes.len(), 7)).unwrap();
        }
    }
}

/// The id a message names the file by.
fn file_id(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Restores snapshot `id` and checks that whatever came out without
/// being named as damaged is exactly the source. Returns the exit code.
fn check_restore(env: &Env, id: &str, source: &Path, name: &str) -> Option<i32> {
    let target = env.path(name);
    let out = env.run(&["restore", id, "--target", target.to_str().unwrap()]);
    let text = output(&out);
    let restored = target.join(source.strip_prefix("/").unwrap());
    if out.status.success() {
        assert_same_tree(source, &restored);
        return Some(0);
    }
    for entry in walk(source) {
        let rel = entry.strip_prefix(source).unwrap();
        let got = restored.join(rel);
        let named = text.contains(&*rel.to_string_lossy());
        if !named && entry.is_file() && got.is_file() {
            assert_eq!(
                fs::read(&entry).unwrap(),
                fs::read(&got).unwrap(),
                "{} restored wrong without being named:\n{text}",
                rel.display()
            );
        }
    }
    out.status.code()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

fn run_matrix(kind: Kind) {
    let pristine = Pristine::new();
    for how in DAMAGES {
        let case = format!("{kind:?} {how:?}");
        let env = pristine.copy();
        let path = target(&env, &pristine, kind);
        let id = file_id(&path);
        damage(&path, how);

        let verified = env.run(&["verify", "--read-data"]);
        let text = output(&verified);
        let code = verified.status.code();
        match (kind, how) {
            // A removed snapshot or lock is simply not there any more.
            (Kind::Snapshot | Kind::Lock, Damage::Delete) => {
                assert_eq!(code, Some(0), "{case}: {text}")
            }
            // No config or no key: there is no repository to open.
            (Kind::Config | Kind::Key, Damage::Delete) => {
                assert_eq!(code, Some(10), "{case}: {text}")
            }
            (Kind::Config | Kind::Key, _) => {
                assert_eq!(code, Some(1), "{case}: {text}");
                assert!(text.contains(&id), "{case}: {id} not named: {text}");
                assert_eq!(text.lines().count(), 1, "{case}: {text}");
            }
            // A removed index file leaves no trace to name: what it listed
            // is named instead, unindexed packs and the blobs they hold.
            (Kind::Index, Damage::Delete) => {
                assert_eq!(code, Some(4), "{case}: {text}");
                assert!(text.contains("in no index"), "{case}: {text}");
            }
            _ => {
                assert_eq!(code, Some(4), "{case}: {text}");
                assert!(text.contains(&id), "{case}: {id} not named: {text}");
            }
        }

        // No restore hands out wrong content with exit 0.
        for (n, (snapshot, source)) in pristine.snapshots.iter().zip(&pristine.sources).enumerate()
        {
            let restored = check_restore(&env, snapshot, source, &format!("before-{n}"));
            let unaffected = matches!(kind, Kind::Lock) || (kind, n) == (Kind::Snapshot, 1);
            if unaffected {
                assert_eq!(restored, Some(0), "{case}: snapshot {n} is not affected");
            }
        }
        if matches!(kind, Kind::Config | Kind::Key) {
            continue;
        }

        // Repaired: the next snapshot stores again what was lost.
        env.ok(&["unlock"]);
        env.ok(&["rebuild-index", "--read-data"]);
        let out = env.run(&["--json", "snapshot", pristine.sources[1].to_str().unwrap()]);
        // A damaged snapshot file stays until it is forgotten: every run
        // that lists snapshots says it skipped it (exit 3).
        let expected = match (kind, how) {
            (Kind::Snapshot, Damage::Delete)
            | (Kind::Lock | Kind::Index | Kind::DataPack | Kind::TreePack, _) => 0,
            (Kind::Snapshot, _) => 3,
            _ => unreachable!(),
        };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{case}: {}",
            output(&out)
        );
        let latest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let latest = latest["id"].as_str().unwrap();
        assert_eq!(
            check_restore(&env, latest, &pristine.sources[1], "after"),
            Some(0),
            "{case}"
        );
    }
}

#[test]
fn config_damage() {
    run_matrix(Kind::Config);
}

#[test]
fn key_damage() {
    run_matrix(Kind::Key);
}

#[test]
fn snapshot_damage() {
    run_matrix(Kind::Snapshot);
}

#[test]
fn index_damage() {
    run_matrix(Kind::Index);
}

#[test]
fn data_pack_damage() {
    run_matrix(Kind::DataPack);
}

#[test]
fn tree_pack_damage() {
    run_matrix(Kind::TreePack);
}

#[test]
fn lock_damage() {
    run_matrix(Kind::Lock);
}

#[test]
fn snapshots_referring_to_lost_data_are_repaired_and_the_originals_recallable() {
    let pristine = Pristine::new();
    let env = pristine.copy();
    let pack = target(&env, &pristine, Kind::DataPack);
    damage(&pack, Damage::Delete);
    assert_eq!(env.run(&["verify"]).status.code(), Some(4));

    let out = env.ok(&["rebuild-index", "--repair-snapshots"]);
    // The lost pack may hold data of one snapshot or of both.
    let repaired = out.matches("repaired as").count();
    assert!(repaired >= 1, "{out}");
    assert!(out.contains("is lost"), "{out}");
    // What is live now verifies and restores without error; each restored
    // file is exactly the source's.
    env.ok(&["verify", "--read-data"]);
    let live = env.json(&["log"]);
    let live = live.as_array().unwrap();
    assert_eq!(live.len(), 2);
    let tagged = live
        .iter()
        .filter(|s| s["tags"].to_string().contains("repaired"))
        .count();
    assert_eq!(tagged, repaired);
    for (n, snapshot) in live.iter().enumerate() {
        let target = env.path(&format!("repaired-{n}"));
        let id = snapshot["id"].as_str().unwrap();
        env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        let source = &pristine.sources[n];
        let restored = target.join(source.strip_prefix("/").unwrap());
        for entry in walk(&restored) {
            if entry.is_file() {
                let original = source.join(entry.strip_prefix(&restored).unwrap());
                assert_eq!(fs::read(&entry).unwrap(), fs::read(original).unwrap());
            }
        }
    }
    // The originals are forgotten, listed, and come back when recalled.
    let forgotten = env.json(&["log", "--forgotten"]);
    let forgotten = forgotten.as_array().unwrap();
    assert_eq!(forgotten.len(), repaired);
    let original = forgotten[0]["short_id"].as_str().unwrap();
    env.ok(&["recall", original]);
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 3);
    // verify noted the forgotten one; recalled, it is damage again.
    assert_eq!(env.run(&["verify"]).status.code(), Some(4));
}
