//! The staging area driven by `mapache stage` and `mapache commit`.

use std::fs;
use std::sync::Arc;

use mapache_store::backend::LocalBackend;
use mapache_store::BlobType;
use mapache_store::Repository;

use crate::util::{assert_same_tree, make_rich_tree, Env, PASSWORD};

fn tree_blobs(env: &Env) -> usize {
    let repo = env.open_repo();
    let index = repo.index();
    index
        .iter()
        .filter(|(_, l)| l.blob_type == BlobType::Tree)
        .count()
}

#[test]
fn stage_add_commit_restore_keeps_everything() {
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);
    env.ok(&[
        "stage",
        "add",
        source.to_str().unwrap(),
        "--to",
        "/imported",
    ]);
    let status = env.ok(&["stage", "status"]);
    assert!(status.contains("A /imported/source/big.bin"), "{status}");
    let commit = env.json(&["commit", "-m", "from staging", "--tag", "staged"]);
    let snapshot = env.json(&["cat", "snapshot", commit["id"].as_str().unwrap()]);
    assert_eq!(snapshot["source"], "staging");
    assert_eq!(snapshot["description"], "from staging");
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&source, &target.join("imported/source"));
    // Committed: nothing left to do.
    assert!(env.ok(&["stage", "status"]).contains("no changes"));
    // Committing again writes nothing (exit 0, said so) unless asked to.
    let again = env.ok(&["commit", "-m", "again"]);
    assert!(again.contains("nothing to commit"), "{again}");
    assert_eq!(env.json(&["commit"])["committed"], false);
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 1);
    let forced = env.json(&["commit", "--allow-empty"]);
    assert_eq!(forced["committed"], true);
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 2);
}

#[test]
fn a_new_repository_with_nothing_staged_has_nothing_to_commit() {
    let env = Env::with_repo();
    assert!(env.ok(&["commit"]).contains("nothing to commit"));
    assert!(env.json(&["log"]).as_array().unwrap().is_empty());
}

#[test]
fn stage_commands_edit_the_next_snapshot() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("a.txt"), "aaa").unwrap();
    fs::write(source.join("sub/b.txt"), "bbb").unwrap();
    env.ok(&["stage", "add", source.to_str().unwrap()]);
    env.ok(&["commit"]);
    env.ok(&["stage", "mv", "/source/a.txt", "/source/sub"]);
    env.ok(&["stage", "mkdir", "-p", "/new/deeper"]);
    env.ok(&["stage", "rm", "-R", "/source/sub/b.txt"]);
    let status = env.ok(&["stage", "status"]);
    let mut lines: Vec<&str> = status.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "A /new",
            "A /new/deeper",
            "A /source/sub/a.txt",
            "D /source/a.txt",
            "D /source/sub/b.txt"
        ]
    );
    let listing = env.ok(&["stage", "ls", "/source/sub"]);
    assert_eq!(listing.trim(), "/source/sub/a.txt");
    env.ok(&["commit"]);
    let files = env.ok(&["ls", "latest", "/", "-R"]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [
            "/new",
            "/new/deeper",
            "/source",
            "/source/sub",
            "/source/sub/a.txt"
        ]
    );
    // Reset drops changes.
    env.ok(&["stage", "rm", "-R", "/new"]);
    env.ok(&["stage", "reset"]);
    assert!(env.ok(&["stage", "status"]).contains("no changes"));
    env.ok(&["stage", "reset", "--base", "empty"]);
    assert!(env.ok(&["stage", "ls", "/"]).is_empty());
}

#[test]
fn commit_writes_only_the_trees_along_the_change() {
    let env = Env::with_repo();
    let source = env.path("base");
    for d in 0..20 {
        let dir = source.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            fs::write(dir.join(format!("f{f:02}")), format!("{d}/{f}")).unwrap();
        }
    }
    env.ok(&["stage", "add", source.to_str().unwrap()]);
    env.ok(&["commit"]);
    let before = tree_blobs(&env);
    let change = env.path("change");
    fs::create_dir_all(&change).unwrap();
    fs::write(change.join("f07"), "changed").unwrap();
    env.ok(&[
        "stage",
        "add",
        change.join("f07").to_str().unwrap(),
        "--to",
        "/base/dir05",
    ]);
    env.ok(&["commit"]);
    // root, base/ and base/dir05: nothing else is written again.
    assert_eq!(tree_blobs(&env) - before, 3);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(target.join("base/dir05/f07")).unwrap(),
        "changed"
    );
    assert_eq!(
        fs::read_to_string(target.join("base/dir06/f07")).unwrap(),
        "6/7"
    );
}

#[test]
fn a_second_user_of_the_staging_area_is_refused() {
    let env = Env::with_repo();
    let backend = Arc::new(LocalBackend::new(env.repo.clone()));
    let repo = Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let state = env.staging_dir(&repo.config().id);
    let repo = Arc::new(repo.load_index().unwrap());
    let held = mapache_fs::staging::Staging::open(repo, &state).unwrap();
    let out = env.run(&["stage", "ls", "/"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by pid"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    drop(held);
    env.ok(&["stage", "ls", "/"]);
}

#[test]
fn state_folder_is_private() {
    let env = Env::with_repo();
    env.ok(&["stage", "ls", "/"]);
    let repo = Repository::open(
        Arc::new(LocalBackend::new(env.repo.clone())),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    let state = env.staging_dir(&repo.config().id);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn staged_entries_are_recorded_with_owner_names_as_snapshot_records_them() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/a.txt"), "a").unwrap();
    env.ok(&["stage", "add", source.to_str().unwrap()]);
    env.ok(&["stage", "mkdir", "/made-here"]);
    env.ok(&["commit"]);
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    let listing = env.ok(&["ls", "-l", "latest", "/", "-R"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    for line in lines {
        let owner_and_group: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
        assert_eq!(owner_and_group, [me.as_str(), me.as_str()], "{line}");
    }
}

#[test]
fn a_new_staging_area_continues_the_last_snapshot_committed_from_staging() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("old.txt"), "old").unwrap();
    env.ok(&["stage", "add", source.to_str().unwrap()]);
    let first = env.json(&["commit", "-m", "first"]);
    // The state folder is gone (a reinstalled machine, a wiped
    // ~/.local/state): a new staging area.
    fs::remove_dir_all(env.path("state")).unwrap();
    let out = env.command(&["stage", "status"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let short = first["short_id"].as_str().unwrap();
    assert!(
        said.contains(&format!("no changes since snapshot {short}")),
        "{said}"
    );
    fs::write(source.join("new.txt"), "new").unwrap();
    env.ok(&[
        "stage",
        "add",
        source.join("new.txt").to_str().unwrap(),
        "--to",
        "/source",
    ]);
    env.ok(&["commit", "-m", "second"]);
    let files = env.ok(&["ls", "latest", "/", "-R"]);
    assert!(
        files.contains("/source/old.txt"),
        "the earlier commit was dropped: {files}"
    );
    assert!(files.lines().any(|l| l == "/source/new.txt"), "{files}");
}

#[test]
fn a_commit_records_a_summary_like_a_snapshot() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("one"), "1").unwrap();
    fs::write(source.join("ten"), "0123456789").unwrap();
    fs::write(source.join("sub/hundred"), "h".repeat(100)).unwrap();
    env.ok(&["stage", "add", source.to_str().unwrap()]);
    let first = env.json(&["commit"]);
    let summary = |commit: &serde_json::Value| {
        env.json(&["cat", "snapshot", commit["id"].as_str().unwrap()])["summary"].clone()
    };
    let s = summary(&first);
    assert_eq!(
        (
            s["files_new"].as_u64(),
            s["files_changed"].as_u64(),
            s["files_unchanged"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(s["dirs"], 2, "{s}");
    assert_eq!(s["total_bytes"], 111, "{s}");
    assert!(s["bytes_added"].as_u64().unwrap() >= 111, "{s}");

    // One file changed, one removed, one folder added.
    fs::write(source.join("ten"), "abcdefghijklmnopqrst").unwrap();
    env.ok(&[
        "stage",
        "add",
        source.join("ten").to_str().unwrap(),
        "--to",
        "/source",
    ]);
    env.ok(&["stage", "rm", "/source/one"]);
    env.ok(&["stage", "mkdir", "/source/empty"]);
    let s = summary(&env.json(&["commit"]));
    assert_eq!(
        (
            s["files_new"].as_u64(),
            s["files_changed"].as_u64(),
            s["files_unchanged"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["dirs"], 3, "{s}");
    assert_eq!(s["total_bytes"], 120, "{s}");
    // `log` shows the size, as for `snapshot`.
    let log = env.ok(&["log"]);
    assert!(!log.lines().any(|l| l.contains(" - ")), "{log}");
}
