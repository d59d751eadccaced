//! Helpers for the end-to-end tests: running the binary, making trees,
//! comparing trees.

#![allow(dead_code)]

mod compare;
mod delay;
mod fixtures;
mod garage;
#[cfg(feature = "fuse")]
mod mount;
mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use compare::assert_same_tree;
pub use delay::DelayProxy;
pub use fixtures::{make_rich_tree, random_bytes, write_random_file};
pub use garage::Garage;
#[cfg(feature = "fuse")]
pub use mount::{force_unmount, is_mounted, resident_pages, MountGuard};
pub use sshd::Sshd;

pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch folder with a repository path and a password file.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The repository folder on this machine.
    pub repo: PathBuf,
    /// How commands name it: the folder, or a URL that reaches it.
    pub location: String,
    /// Global arguments every command gets (such as an SSH key).
    pub extra: Vec<String>,
    /// Environment variables every command gets (such as S3 credentials).
    pub vars: Vec<(String, String)>,
    pub password_file: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("mapache-e2e-")
            .tempdir()
            .expect("temp dir");
        let repo = dir.path().join("repo");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        Env {
            dir,
            location: repo.display().to_string(),
            extra: Vec::new(),
            vars: Vec::new(),
            repo,
            password_file,
        }
    }

    /// A new Env whose repository is reached through `sshd` with its
    /// client key and known_hosts (none made yet).
    pub fn over_sftp(sshd: &Sshd) -> Env {
        let mut env = Env::new();
        env.location = sshd.url(&env.repo);
        env.extra = vec![
            "--ssh-key".into(),
            sshd.client_key.display().to_string(),
            "--ssh-known-hosts".into(),
            sshd.known_hosts.display().to_string(),
        ];
        env
    }

    /// A new Env whose repository is `prefix` in the cluster's bucket.
    pub fn over_s3(garage: &Garage, prefix: &str) -> Env {
        let mut env = Env::new();
        env.location = garage.url(prefix);
        env.vars = garage.vars.clone();
        env.extra = vec![
            "--cache-dir".into(),
            env.path("cache").display().to_string(),
        ];
        env
    }

    /// A new Env with an initialized repository (cheap KDF).
    pub fn with_repo() -> Env {
        Env::with_repo_args(&[])
    }

    /// A new Env with a repository made with `init`'s `extra` arguments
    /// (cheap KDF).
    pub fn with_repo_args(extra: &[&str]) -> Env {
        let env = Env::new();
        let mut args = vec!["init", "--kdf-memory", "8192", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        env.ok(&args);
        env
    }

    /// The repository opened in this process, with its index.
    pub fn open_repo(&self) -> mapache_store::IndexedRepository {
        let backend =
            std::sync::Arc::new(mapache_store::backend::LocalBackend::new(self.repo.clone()));
        mapache_store::Repository::open(backend, PASSWORD.as_bytes())
            .unwrap()
            .load_index()
            .unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The staging folder of this environment's repository, whose id is
    /// `repository`: `state/<id>/<location key>/staging`, the one
    /// location key that exists.
    pub fn staging_dir(&self, repository: &mapache_store::Id) -> PathBuf {
        let by_id = self.path("state").join(repository.to_hex());
        let mut keys: Vec<PathBuf> = std::fs::read_dir(&by_id)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        match keys.len() {
            0 => {
                // Not made yet: let the binary make it.
                self.ok(&["stage", "status"]);
                self.staging_dir(repository)
            }
            1 => keys.pop().unwrap().join("staging"),
            n => panic!("{n} staging folders for one repository location"),
        }
    }

    /// The command, with a clean environment: nothing from the developer's
    /// shell leaks in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command_without_password(&[]);
        cmd.arg("--password-file").arg(&self.password_file);
        cmd.args(args);
        cmd
    }

    /// The command with the repository but no password source.
    pub fn command_without_password(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mapache"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MAPACHE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.arg("-r").arg(&self.location);
        cmd.args(&self.extra);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd.arg("--state-dir").arg(self.dir.path().join("state"));
        cmd.args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mapache")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mapache {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{text}"))
    }

    /// Takes a snapshot of `path`, returning the JSON report.
    pub fn snapshot(&self, path: &Path) -> serde_json::Value {
        self.json(&["snapshot", path.to_str().unwrap()])
    }

    /// Restores `snapshot` to a fresh folder and returns the path where
    /// `source` landed inside it.
    pub fn restore(&self, snapshot: &str, source: &Path, name: &str) -> PathBuf {
        let target = self.path(name);
        self.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
        target.join(source.strip_prefix("/").unwrap())
    }

    /// Every file under the repository folder.
    pub fn repo_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.repo.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn pack_files(&self) -> Vec<PathBuf> {
        self.repo_files()
            .into_iter()
            .filter(|p| p.starts_with(self.repo.join("packs")))
            .collect()
    }
}

/// Leaves in the repository of `env` one temporary file that a write killed
/// two hours ago left and one that a running write is filling, runs
/// `clean`, and checks that only the first went (and was reported).
pub fn clean_removes_only_stale_temporaries(env: &Env, what: &str) {
    let stale = env.repo.join("packs/00/.tmp-0123456789abcdef");
    let fresh = env.repo.join("index/.tmp-fedcba9876543210");
    std::fs::write(&stale, vec![7u8; 4096]).unwrap();
    std::fs::write(&fresh, b"being written").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let file = std::fs::File::options().write(true).open(&stale).unwrap();
    file.set_modified(two_hours_ago).unwrap();
    drop(file);
    let out = env.ok(&["clean"]);
    assert!(!stale.exists(), "{what}: {out}");
    assert!(fresh.exists(), "{what}: a running write keeps its file");
    assert!(
        out.contains("temporary files left by interrupted writes removed: 4.0 KiB"),
        "{what}: {out}"
    );
    env.ok(&["verify"]);
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a command succeeded, showing its stderr if not.
pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// Runs `cmd` with `sh -c`, asserts it succeeded and returns its stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd}: {stdout}{}", stderr(&out));
    stdout
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct TmpfsMount {
    pub path: std::path::PathBuf,
}

impl TmpfsMount {
    pub fn new(path: &Path, options: &str) -> TmpfsMount {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs failed");
        TmpfsMount {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Whether the test can run; outside CI a test that needs root says so
/// and passes, in CI not being root is a failure.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} must run as root in CI"
    );
    eprintln!("{test}: needs root to mount a tmpfs; not run");
    false
}

/// Snapshots a rich tree into the repository of `env` (made already),
/// restores it, verifies, and where FUSE is built reads it through a
/// mount: each copy compared with the source.
pub fn snapshot_restore_and_mount(env: &Env) {
    let source = env.path("source");
    make_rich_tree(&source);
    env.snapshot(&source);
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
    env.ok(&["verify"]);
    #[cfg(feature = "fuse")]
    {
        let mount = MountGuard::new(env, "mnt");
        let inside = mount
            .path
            .join("latest")
            .join(source.strip_prefix("/").unwrap());
        assert_same_tree(&source, &inside);
    }
}
