//! `mapache clean` through the binary: killed at any moment, run beside
//! snapshots and commits, and run from another process while a staging
//! area holds uncommitted files.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Instant;

use crate::util::{
    assert_same_tree, clean_removes_only_stale_temporaries, make_rich_tree, stderr,
    write_random_file, Env,
};

/// A repository of 1 MiB packs with two snapshots of `source`: the first
/// of 24 files of 1 MiB (forgotten), the second without every third file
/// and with four new ones. Returns the first's id.
fn two_generations() -> (Env, String) {
    let env = Env::with_repo_args(&["--pack-size", "1"]);
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    for n in 0..24 {
        write_random_file(&source.join(format!("f{n:02}")), 1 << 20, n);
    }
    let first = env.snapshot(&source)["id"].as_str().unwrap().to_string();
    for n in (0..24).step_by(3) {
        fs::remove_file(source.join(format!("f{n:02}"))).unwrap();
    }
    for n in 0..4 {
        write_random_file(&source.join(format!("new{n}")), 700_000, 100 + n);
    }
    env.snapshot(&source);
    env.ok(&["forget", &first]);
    (env, first)
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    env.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn kill_clean_at_twenty_moments() {
    let (env, _) = two_generations();
    let source = env.path("source");
    let template = env.path("template");
    copy_dir(&env.repo, &template);

    // How long a whole clean takes here, to spread the kills over it.
    let started = Instant::now();
    env.ok(&["clean", "--keep-forgotten", "0", "--max-unused", "0"]);
    let whole = started.elapsed();
    let cleaned_size = dir_size(&env.repo.join("packs"));

    let rounds = 20;
    for round in 0..rounds {
        copy_dir(&template, &env.repo);
        let mut child = spawn(
            &env,
            &["clean", "--keep-forgotten", "0", "--max-unused", "0"],
        );
        std::thread::sleep(whole * round / rounds);
        // SIGKILL: no chance to tidy up.
        let _ = child.kill();
        child.wait().unwrap();
        let verified = env.run(&["verify"]);
        assert!(
            verified.status.success(),
            "verify after a kill in round {round}: {}",
            String::from_utf8_lossy(&verified.stdout)
        );
        let restored = env.restore("latest", &source, &format!("after-kill-{round}"));
        assert_same_tree(&source, &restored);
        fs::remove_dir_all(env.path(&format!("after-kill-{round}"))).unwrap();
        // A rerun finishes the job.
        env.ok(&["clean", "--keep-forgotten", "0", "--max-unused", "0"]);
        let size = dir_size(&env.repo.join("packs"));
        assert!(
            size <= cleaned_size + cleaned_size / 20,
            "round {round}: {size} bytes of packs after the rerun, {cleaned_size} after an uncut clean"
        );
    }
    env.ok(&["verify", "--read-data"]);
    let restored = env.restore("latest", &source, "final");
    assert_same_tree(&source, &restored);
}

#[test]
fn clean_removes_temporary_files_that_killed_writes_left() {
    let (env, _) = two_generations();
    clean_removes_only_stale_temporaries(&env, "local");
}

/// The bytes of the packs below `dir`; temporary files that a killed
/// write left are not packs (`clean` removes them once they are an hour
/// old, see `STALE_TEMPORARIES`).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn snapshots_and_commits_during_clean_stay_complete() {
    let (env, first) = two_generations();
    let source = env.path("source");
    // Data of the forgotten first snapshot comes back in the snapshots
    // made during the clean: they reuse blobs the clean planned to delete.
    let again = env.path("again");
    fs::create_dir_all(&again).unwrap();
    for n in (0..24).step_by(3) {
        write_random_file(&again.join(format!("f{n:02}")), 1 << 20, n);
    }
    let staged = env.path("staged");
    make_rich_tree(&staged);

    let mut clean = spawn(
        &env,
        &["clean", "--keep-forgotten", "0", "--max-unused", "0"],
    );
    let mut made = Vec::new();
    let mut round = 0;
    loop {
        let finished = clean.try_wait().unwrap().is_some();
        // Each round changes the tree, so each snapshot is new.
        fs::write(again.join("round"), format!("{round}")).unwrap();
        let snapshot = env.snapshot(&again);
        made.push(snapshot["id"].as_str().unwrap().to_string());
        env.ok(&[
            "stage",
            "add",
            staged.to_str().unwrap(),
            "--to",
            &format!("/r{round}"),
        ]);
        env.ok(&["commit", "-m", &format!("round {round}")]);
        round += 1;
        if finished {
            break;
        }
    }
    let out = clean.wait_with_output().unwrap();
    assert!(out.status.success(), "clean: {}", stderr(&out));
    assert!(round >= 2, "the clean ended before anything ran beside it");
    env.ok(&["verify", "--read-data"]);
    // The last snapshot of `again` and the last commit restore exactly.
    let restored = env.restore(made.last().unwrap(), &again, "again-restored");
    assert_same_tree(&again, &restored);
    // The last commit holds what every round staged.
    let committed = env.path("committed");
    env.ok(&["restore", "latest", "--target", committed.to_str().unwrap()]);
    for r in 0..round {
        assert_same_tree(&staged, &committed.join(format!("r{r}/staged")));
    }
    let live = env.path("live");
    let path = source.to_str().unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--path",
        path,
        "--target",
        live.to_str().unwrap(),
    ]);
    assert_same_tree(&source, &live.join(path.trim_start_matches('/')));
    // The first snapshot was removed for good.
    let cat = env.run(&["cat", "snapshot", &first]);
    assert!(!cat.status.success());
}

#[test]
fn staged_files_survive_clean_from_another_process_then_commit_and_restore() {
    let env = Env::with_repo();
    let base = env.path("base");
    make_rich_tree(&base);
    env.snapshot(&base);
    env.ok(&["stage", "reset", "--base", "latest"]);
    let added = env.path("added");
    fs::create_dir_all(&added).unwrap();
    for n in 0..6 {
        write_random_file(&added.join(format!("new{n}")), 300_000, 40 + n);
    }
    env.ok(&["stage", "add", added.to_str().unwrap()]);
    // The staging area's record is in the repository for any machine.
    let areas = env.json(&["stage", "areas"]);
    assert_eq!(areas.as_array().unwrap().len(), 1, "{areas}");
    assert!(areas[0]["blobs"].as_u64().unwrap() >= 6);

    // Another machine (another state folder) forgets every snapshot,
    // the staging area's base included, and cleans.
    let ids: Vec<String> = env
        .json(&["log"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut elsewhere = env.command(&["forget"]);
    elsewhere.args(&ids);
    elsewhere.arg("--state-dir").arg(env.path("other-state"));
    assert!(elsewhere.output().unwrap().status.success());
    let mut clean = env.command(&["clean", "--keep-forgotten", "0"]);
    clean.arg("--state-dir").arg(env.path("other-state"));
    let out = clean.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&["verify", "--read-data"]);

    // The staging area commits, and its snapshot restores exactly.
    env.ok(&["commit", "-m", "after clean"]);
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&added, &target.join("added"));
    assert_same_tree(&base, &target.join(base.strip_prefix("/").unwrap()));

    // Once the area is forgotten, clean no longer keeps its base.
    let area = env.json(&["stage", "areas"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["stage", "forget-area", &area[..8]]);
    assert!(env.json(&["stage", "areas"]).as_array().unwrap().is_empty());
}

#[test]
fn clean_refuses_while_a_reader_holds_the_repository_and_deletes_nothing() {
    let (env, _) = two_generations();
    let packs_before = env.pack_files();
    let repo = env.open_repo();
    let reader = repo.lock(false).unwrap();
    let out = env.run(&["--retry-lock", "1s", "clean", "--keep-forgotten", "0"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    drop(reader);
    // Repacked copies may have been added; nothing was deleted.
    let packs_after = env.pack_files();
    assert!(packs_before.iter().all(|p| packs_after.contains(p)));
    env.ok(&["verify"]);
    env.ok(&["clean", "--keep-forgotten", "0"]);
    assert!(env.pack_files().len() < packs_before.len());
}
