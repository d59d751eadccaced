//! A hostile or broken world around the repository: read-only storage,
//! racing inits, files that change while read, a repository inside its own
//! source, permissions, and how errors read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{assert_same_tree, require_root, stderr, write_random_file, Env};

/// A read-only bind mount of a folder, undone when dropped.
struct ReadOnlyView {
    path: PathBuf,
}

impl ReadOnlyView {
    fn new(of: &Path, at: &Path) -> ReadOnlyView {
        fs::create_dir_all(at).unwrap();
        crate::util::sh(&format!("mount --bind {} {}", of.display(), at.display()));
        let view = ReadOnlyView {
            path: at.to_path_buf(),
        };
        crate::util::sh(&format!("mount -o remount,bind,ro {}", at.display()));
        view
    }
}

impl Drop for ReadOnlyView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_read_only_repository_is_read_without_a_lock() {
    if !require_root("a_read_only_repository_is_read_without_a_lock") {
        return;
    }
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("a"), 300_000, 1);
    env.snapshot(&source);
    // The repository folder made read-only in place (as a backup disk
    // mounted read-only would be).
    let view = ReadOnlyView::new(&env.repo, &env.repo);
    let ro = |args: &[&str]| env.run(args);
    for args in [
        &["log"][..],
        &["ls", "latest"],
        &["cat", "config"],
        &["verify", "--read-data"],
    ] {
        let out = ro(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let target = env.path("restored");
    let out = ro(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("without a lock"), "{}", stderr(&out));
    assert_same_tree(&source, &target.join(source.strip_prefix("/").unwrap()));
    #[cfg(feature = "fuse")]
    {
        // Snapshots are browsable; staging/, which writes into the
        // repository, is left out.
        let mount = crate::util::MountGuard::new(&env, "mnt");
        let file = mount
            .path
            .join("latest")
            .join(source.strip_prefix("/").unwrap())
            .join("a");
        assert_eq!(fs::read(file).unwrap(), fs::read(source.join("a")).unwrap());
        assert!(!mount.path.join("staging").exists());
    }
    // Writing fails with one clear line, and nothing changed.
    let out = ro(&["snapshot", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let errors = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "{}", stderr(&out));
    drop(view);
    // `--no-lock` on a writable repository leaves no lock behind either.
    env.ok(&["--no-lock", "verify"]);
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
}

#[test]
fn of_racing_inits_exactly_one_succeeds() {
    for _ in 0..4 {
        let env = Env::new();
        let children: Vec<_> = (0..6)
            .map(|_| {
                env.command(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outcomes: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let won = outcomes.iter().filter(|o| o.status.success()).count();
        assert_eq!(won, 1);
        for lost in outcomes.iter().filter(|o| !o.status.success()) {
            let text = stderr(lost);
            assert!(
                text.contains("not empty") || text.contains("already exists"),
                "{text}"
            );
        }
        assert_eq!(fs::read_dir(env.repo.join("keys")).unwrap().count(), 1);
        env.ok(&["verify"]);
    }
}

#[test]
fn init_refuses_a_folder_that_is_not_empty_and_makes_private_files() {
    let env = Env::new();
    fs::create_dir_all(&env.repo).unwrap();
    fs::write(env.repo.join("notes.txt"), "mine").unwrap();
    let out = env.run(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    fs::remove_file(env.repo.join("notes.txt")).unwrap();

    // Whatever the umask, files are 0600 and folders 0700.
    let init = env.command(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(init.get_program())
        .args(init.get_args())
        .envs(init.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .status()
        .unwrap();
    assert!(status.success());
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), "x").unwrap();
    env.snapshot(&source);
    for path in env.repo_files() {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    // (The repository folder itself existed before: its mode is the user's.)
    for dir in ["keys", "snapshots", "index", "packs", "packs/00", "locks"] {
        let mode = fs::metadata(env.repo.join(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
}

#[test]
fn a_file_that_keeps_changing_while_read_is_named_and_gives_exit_3() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("steady"), 100_000, 1);
    let busy = source.join("busy.log");
    write_random_file(&busy, 20 << 20, 2);
    // A writer appending all the time, as a log file gets, until the
    // snapshot is over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (busy, stop) = (busy.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(&busy).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(&[b'x'; 512]).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        })
    };
    let out = env.run(&["--json", "snapshot", source.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["changed_while_read"], 1, "{report}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("busy.log") && warnings.contains("changed while"),
        "{warnings}"
    );
    assert!(!warnings.contains("steady"));
}

#[test]
fn the_repository_inside_a_source_is_left_out_with_a_note() {
    let env = Env::new();
    let source = env.dir.path().to_path_buf();
    env.ok(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    fs::write(source.join("mine.txt"), "data").unwrap();
    let out = env.run(&["snapshot", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note:") && stderr(&out).contains("repository"),
        "{}",
        stderr(&out)
    );
    let listing = env.ok(&["ls", "latest", source.to_str().unwrap()]);
    assert!(listing.contains("mine.txt"), "{listing}");
    assert!(!listing.contains("/repo"), "{listing}");
}

#[test]
fn errors_print_each_cause_once_and_a_closed_pipe_is_quiet() {
    let env = Env::with_repo();
    let out = env.run(&["snapshot", "/no/such/path"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );

    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    for i in 0..3000 {
        fs::write(source.join(format!("file-{i:05}")), "x").unwrap();
    }
    env.snapshot(&source);
    let script = format!(
        "{} -r {} --password-file {} --json ls latest -R | head -c 100 >/dev/null; echo ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_mapache"),
        env.repo.display(),
        env.password_file.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert_eq!(stderr(&out), "", "a closed pipe printed something");
}
