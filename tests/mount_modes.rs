//! How a mount starts and what it meets: `--background`, `--base`, a
//! missing or forbidden /dev/fuse, and a repository that goes away while
//! mounted. These tests really mount; CI runs them as root.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{
    force_unmount, is_mounted, require_root, stderr, write_random_file, Env, MountGuard, PASSWORD,
};

/// A background mount found by its pid; unmounted and killed when dropped,
/// whatever the test did.
struct BackgroundMount {
    path: PathBuf,
    pid: i32,
}

impl BackgroundMount {
    /// Whether the process still runs (an exited one may linger as a zombie
    /// until its new parent reaps it).
    fn alive(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| !s.starts_with(" Z"))
        })
    }
}

impl Drop for BackgroundMount {
    fn drop(&mut self) {
        force_unmount(&self.path);
        if self.alive() {
            let pid = nix::unistd::Pid::from_raw(self.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The pid in "... in the background (pid N) ...".
fn pid_in(message: &str) -> i32 {
    let start = message.find("(pid ").expect("a pid in the message") + 5;
    let end = start + message[start..].find(')').unwrap();
    message[start..end].parse().unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inside(mountpoint: &Path, snapshot: &str, source: &Path) -> PathBuf {
    mountpoint
        .join(snapshot)
        .join(source.strip_prefix("/").unwrap())
}

#[test]
fn background_mount_is_ready_when_the_command_returns_and_ends_at_umount() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), "content").unwrap();
    env.snapshot(&source);
    let mountpoint = env.path("mnt");
    fs::create_dir_all(&mountpoint).unwrap();

    // The password comes from the environment here, and must not stay in
    // the long-lived process's environment.
    let out = env
        .command_without_password(&["mount", mountpoint.to_str().unwrap(), "--background"])
        .env("MAPACHE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mount = BackgroundMount {
        path: mountpoint.clone(),
        pid: pid_in(&stderr(&out)),
    };
    let environ = fs::read(format!("/proc/{}/environ", mount.pid)).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("MAPACHE_PASSWORD"),
        "the password is in the mount's environment"
    );
    // No waiting: the command returned once the mount answered.
    let file = inside(&mountpoint, "latest", &source).join("f");
    assert_eq!(fs::read_to_string(file).unwrap(), "content");
    assert!(mount.alive());
    // It left our session (field 6 of /proc/PID/stat): a hang-up of the
    // terminal does not reach it.
    let session = |pid: i32| -> String {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_ne!(session(mount.pid), session(std::process::id() as i32));

    let status = Command::new("umount").arg(&mountpoint).status().unwrap();
    assert!(status.success());
    wait_until("the background mount exits", || !mount.alive());
    assert!(!is_mounted(&mountpoint));
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
    let id = env.open_repo().config().id;
    let log = fs::read_to_string(env.staging_dir(&id).with_file_name("mount.log")).unwrap();
    assert!(log.contains("unmounted"), "log: {log}");
}

#[test]
fn background_mount_reports_a_wrong_password_with_exit_12() {
    let env = Env::with_repo();
    fs::write(&env.password_file, "wrong\n").unwrap();
    let mountpoint = env.path("mnt");
    fs::create_dir_all(&mountpoint).unwrap();
    let out = env.run(&["mount", mountpoint.to_str().unwrap(), "--background"]);
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn mount_base_chooses_what_staging_starts_from_but_never_drops_changes() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), "first").unwrap();
    let first = env.snapshot(&source)["id"].as_str().unwrap().to_string();
    fs::write(source.join("f"), "second").unwrap();
    env.snapshot(&source);
    let staged_file = |mount: &MountGuard| {
        fs::read_to_string(inside(&mount.path.join("staging"), "", &source).join("f"))
    };

    let mut mount = MountGuard::with_args(&env, "mnt", &["--base", &first]);
    assert_eq!(staged_file(&mount).unwrap(), "first");
    mount.stop();
    let mut mount = MountGuard::with_args(&env, "mnt", &["--base", "latest"]);
    assert_eq!(staged_file(&mount).unwrap(), "second");
    // A change on that base...
    let staged = inside(&mount.path.join("staging"), "", &source);
    fs::write(staged.join("new"), "uncommitted").unwrap();
    mount.stop();
    // ... is not dropped for another base.
    for base in [first.as_str(), "empty"] {
        let out = env.run(&["mount", env.path("mnt").to_str().unwrap(), "--base", base]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("uncommitted changes"),
            "{}",
            stderr(&out)
        );
    }
    let mount = MountGuard::with_args(&env, "mnt", &["--base", "latest"]);
    assert_eq!(
        fs::read_to_string(inside(&mount.path.join("staging"), "", &source).join("new")).unwrap(),
        "uncommitted"
    );
}

#[test]
fn missing_or_forbidden_fuse_device_is_a_clear_error() {
    if !require_root("missing_or_forbidden_fuse_device_is_a_clear_error") {
        return;
    }
    let env = Env::with_repo();
    // Other users must reach the mountpoint for the second case.
    fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mountpoint = env.path("mnt");
    fs::create_dir_all(&mountpoint).unwrap();
    let mount_args = |cmd: &mut Command| {
        cmd.arg(env!("CARGO_BIN_EXE_mapache"))
            .arg("-r")
            .arg(&env.repo)
            .arg("--password-file")
            .arg(&env.password_file)
            .arg("mount")
            .arg(&mountpoint);
    };

    // A private mount namespace whose /dev is an empty tmpfs.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$@\"",
        "sh",
    ]);
    mount_args(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/dev/fuse is missing"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    // /dev/fuse readable by root only, and mapache run as nobody.
    let device = env.path("fuse-root-only");
    let script = format!(
        "mknod -m 600 {dev} c 10 229 && mount --bind {dev} /dev/fuse && \
         exec setpriv --reuid 65534 --regid 65534 --clear-groups \"$@\"",
        dev = device.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script, "sh"]);
    mount_args(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no permission to use /dev/fuse"),
        "{}",
        stderr(&out)
    );
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn repository_gone_while_mounted_gives_eio_then_everything_resumes() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("read-before.bin"), 2 << 20, 1);
    write_random_file(&source.join("read-while-gone.bin"), 2 << 20, 2);
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    let dir = inside(&mount.path, "latest", &source);
    assert_eq!(
        fs::read(dir.join("read-before.bin")).unwrap(),
        fs::read(source.join("read-before.bin")).unwrap()
    );

    let away = env.path("repo-away");
    fs::rename(&env.repo, &away).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // past the list's refresh
    let err = fs::read(dir.join("read-while-gone.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // The last known snapshots still show.
    assert_eq!(
        fs::read_dir(mount.path.join("snapshots")).unwrap().count(),
        1
    );
    // Staged data cannot be made durable now: fsync says so.
    let staged = mount.path.join("staging").join("new.bin");
    let content: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut file = fs::File::create(&staged).unwrap();
    file.write_all(&content).unwrap();
    assert_eq!(file.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(mount.is_mounted());

    fs::rename(&away, &env.repo).unwrap();
    assert_eq!(
        fs::read(dir.join("read-while-gone.bin")).unwrap(),
        fs::read(source.join("read-while-gone.bin")).unwrap()
    );
    file.sync_all().unwrap();
    drop(file);
    env.ok(&["commit", "-m", "after the outage"]);
    assert!(
        mount.log().contains("read-while-gone.bin"),
        "{}",
        mount.log()
    );
    drop(mount);
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(fs::read(restored.join("new.bin")).unwrap(), content);
}
