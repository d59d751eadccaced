//! Bad input: each case gets a clear one-line error, the documented exit
//! code, and loses nothing already stored.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use mapache_store::backend::LocalBackend;
use mapache_store::Repository;

use crate::util::{
    assert_same_tree, is_root, require_root, stderr, write_random_file, Env, TmpfsMount, PASSWORD,
};

fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    let err = stderr(out);
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
}

#[test]
fn wrong_password_exits_12() {
    let env = Env::with_repo();
    fs::write(&env.password_file, "not the password\n").unwrap();
    assert_one_line_error(&env.run(&["log"]), 12, "wrong password");
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    assert_one_line_error(&env.run(&["log"]), 10, "no repository");
    // A folder that exists but is no repository.
    fs::create_dir_all(&env.repo).unwrap();
    assert_one_line_error(
        &env.run(&["snapshot", "/etc/hostname"]),
        10,
        "no repository",
    );
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::with_repo();
    let before = env.repo_files();
    let out = env.run(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    assert_one_line_error(&out, 1, "already exists");
    assert_eq!(env.repo_files(), before);
    env.ok(&["log"]);
}

#[test]
fn lock_held_by_live_process_exits_11() {
    let env = Env::with_repo();
    let backend = Arc::new(LocalBackend::new(env.repo.clone()));
    let repo = Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let guard = repo.lock(true).unwrap();
    let source = env.password_file.to_str().unwrap();
    let out = env.run(&["--retry-lock", "0", "snapshot", source]);
    assert_one_line_error(&out, 11, "locked");
    // A waiting snapshot goes on once the lock is released.
    let waiting = env
        .command(&["--retry-lock", "1m", "snapshot", source])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(guard);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 1);
}

#[test]
fn stale_lock_of_dead_process_is_ignored_and_unlocked() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("f"), 64 * 1024 * 1024, 3);
    // Kill a snapshot mid-run: it leaves its lock behind.
    let mut child = env
        .command(&["snapshot", source.to_str().unwrap()])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    env.ok(&["snapshot", source.to_str().unwrap()]);
    env.ok(&["unlock"]);
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
}

#[test]
fn missing_source_path_fails_cleanly() {
    let env = Env::with_repo();
    let out = env.run(&["snapshot", "/definitely/not/here"]);
    assert_one_line_error(&out, 1, "/definitely/not/here");
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 0);
}

/// Runs `args` unable to bypass file permissions, even as root (by
/// dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set).
fn run_without_dac_override(env: &Env, args: &[&str]) -> std::process::Output {
    let cmd = env.command(args);
    if !is_root() {
        let mut cmd = cmd;
        return cmd.output().unwrap();
    }
    let mut wrapped = Command::new("setpriv");
    wrapped
        .arg("--bounding-set=-dac_override,-dac_read_search")
        .arg("--");
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.output().expect("setpriv (util-linux) runs")
}

#[test]
fn unreadable_entries_are_skipped_with_exit_3() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("closed-dir")).unwrap();
    fs::write(source.join("closed-dir/inside"), "hidden").unwrap();
    fs::write(source.join("readable"), "fine").unwrap();
    fs::write(source.join("closed-file"), "secret").unwrap();
    fs::set_permissions(
        source.join("closed-file"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(source.join("closed-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = run_without_dac_override(&env, &["--json", "snapshot", source.to_str().unwrap()]);
    fs::set_permissions(source.join("closed-dir"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("closed-file") && err.contains("closed-dir"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["errors"], 2);
    // The snapshot holds what could be read.
    let listing = env.ok(&["ls", "latest", source.to_str().unwrap()]);
    assert!(listing.contains("readable"));
    assert!(listing.contains("closed-dir"));
    assert!(!listing.contains("closed-file"));
}

/// Two files whose blobs sit in different packs: the bystander is stored
/// by an earlier snapshot, so damage to the victim's pack cannot touch it.
fn snapshot_two_files(env: &Env) -> std::path::PathBuf {
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("bystander.txt"), "unharmed").unwrap();
    env.snapshot(&source);
    write_random_file(&source.join("victim.bin"), 2 * 1024 * 1024, 1);
    env.snapshot(&source);
    source
}

fn pack_holding(env: &Env, min_size: u64) -> std::path::PathBuf {
    env.pack_files()
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() > min_size)
        .expect("a data pack")
}

#[test]
fn flipped_bit_names_the_damaged_file_and_restores_the_rest() {
    let env = Env::with_repo();
    let source = snapshot_two_files(&env);
    let pack = pack_holding(&env, 1024 * 1024);
    let mut data = fs::read(&pack).unwrap();
    data[1000] ^= 0x01;
    fs::write(&pack, data).unwrap();
    let target = env.path("target");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("victim.bin") && err.contains("authentication"),
        "{err}"
    );
    assert!(!err.contains("bystander"), "{err}");
    let restored = target.join(source.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(restored.join("bystander.txt")).unwrap(),
        "unharmed"
    );
}

#[test]
fn truncated_pack_names_the_damaged_file_and_restores_the_rest() {
    let env = Env::with_repo();
    let source = snapshot_two_files(&env);
    let pack = pack_holding(&env, 1024 * 1024);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let target = env.path("target");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("victim.bin") && err.contains("truncated"),
        "{err}"
    );
    let restored = target.join(source.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(restored.join("bystander.txt")).unwrap(),
        "unharmed"
    );
}

#[test]
fn unknown_and_ambiguous_snapshot_ids() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    assert_one_line_error(&env.run(&["ls", "latest"]), 1, "no snapshots");
    // 17 snapshots: two of them must share a first hex digit.
    let mut ids = Vec::new();
    for i in 0..17 {
        fs::write(source.join("f"), format!("version {i}")).unwrap();
        ids.push(env.snapshot(&source)["id"].as_str().unwrap().to_string());
    }
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| ids.iter().filter(|id| id.starts_with(d.as_str())).count() > 1)
        .unwrap();
    assert_one_line_error(&env.run(&["ls", &digit]), 1, "ambiguous");
    let unused = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| !ids.iter().any(|id| id.starts_with(d.as_str())));
    let unknown = unused.unwrap_or_else(|| "0".repeat(64));
    assert_one_line_error(&env.run(&["ls", &unknown]), 1, "not found");
    assert_one_line_error(&env.run(&["ls", "not-hex"]), 1, "not a snapshot id");
}

#[test]
fn restore_to_full_or_read_only_filesystem() {
    if !require_root("restore_to_full_or_read_only_filesystem") {
        return;
    }
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("big.bin"), 8 * 1024 * 1024, 4);
    env.snapshot(&source);

    // A full disk fails the file it hits: named, and not left under its
    // name looking complete.
    let full = TmpfsMount::new(&env.path("full"), "size=1m");
    let out = env.run(&["restore", "latest", "--target", full.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("big.bin") && err.contains("No space left on device"),
        "{err}"
    );
    let restored = full.path.join(source.strip_prefix("/").unwrap());
    assert!(!restored.join("big.bin").exists());
    let leftovers: Vec<_> = fs::read_dir(&restored).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let read_only = TmpfsMount::new(&env.path("ro"), "ro,size=1m");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        read_only.path.join("t").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 1, "Read-only file system");

    // The repository is unharmed.
    let restored = env.restore("latest", &source, "fine");
    assert_same_tree(&source, &restored);
}

#[test]
fn one_file_system_stays_on_the_source_filesystem() {
    if !require_root("one_file_system_stays_on_the_source_filesystem") {
        return;
    }
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("mounted")).unwrap();
    fs::write(source.join("local.txt"), "local").unwrap();
    let mount = TmpfsMount::new(&source.join("mounted"), "size=1m");
    fs::write(mount.path.join("elsewhere.txt"), "other fs").unwrap();
    let src = source.to_str().unwrap();
    env.json(&["snapshot", "-x", src]);
    let listing = env.ok(&["ls", "latest", src, "-R"]);
    assert!(listing.contains("local.txt"));
    // The mount point itself is recorded, its content is not.
    assert!(listing.contains(&format!("{src}/mounted\n")));
    assert!(!listing.contains("elsewhere.txt"), "{listing}");
    env.json(&["snapshot", src]);
    assert!(env
        .ok(&["ls", "latest", src, "-R"])
        .contains("elsewhere.txt"));
}

#[test]
fn remote_repository_strings_are_never_made_local_folders() {
    let env = Env::new();
    let cwd = env.path("cwd");
    fs::create_dir_all(&cwd).unwrap();
    // Stores nothing listens for: a clear error naming the place.
    for location in [
        "sftp://root@127.0.0.1:1/path",
        "sftp:user@127.0.0.1:/srv/repo",
        "s3:http://127.0.0.1:1/bucket",
        "rest:http://host/",
        "ftp://host/x",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mapache"))
            .current_dir(&cwd)
            .args(["-r", location, "--password-file"])
            .arg(&env.password_file)
            .args(["init", "--kdf-memory", "8192", "--kdf-iterations", "1"])
            .output()
            .unwrap();
        let expected = match location.split(':').next() {
            Some("sftp" | "s3") => "127.0.0.1",
            _ => "not supported yet",
        };
        assert_one_line_error(&out, 1, expected);
    }
    assert_eq!(
        fs::read_dir(&cwd).unwrap().count(),
        0,
        "a local folder was made"
    );
}
