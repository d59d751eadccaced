//! Repositories on another host over SFTP, against a private sshd on
//! 127.0.0.1: round trips, the host key check, and a link lost mid-run,
//! through OpenSSH's client (the default) and the built-in one.

use std::fs;
use std::time::{Duration, Instant};

use crate::util::{
    assert_same_tree, clean_removes_only_stale_temporaries, make_rich_tree,
    snapshot_restore_and_mount, stderr, write_random_file, Env, Sshd,
};

fn init(env: &Env) {
    env.ok(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
}

/// The SSH clients mapache can use.
const CLIENTS: [&str; 2] = ["openssh", "builtin"];

fn over_sftp_with(sshd: &Sshd, client: &str) -> Env {
    let mut env = Env::over_sftp(sshd);
    env.extra.extend(["--ssh-client".into(), client.into()]);
    env
}

#[test]
fn a_repository_over_sftp_works_like_a_local_one() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let env = Env::over_sftp(&sshd);
    init(&env);
    assert!(
        env.repo.join("config").is_file(),
        "the repository is where the URL says"
    );
    let source = env.path("source");
    make_rich_tree(&source);
    let first = env.snapshot(&source);
    let second = env.snapshot(&source);
    // Nothing read again (only a folder's changed times make new trees).
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert_eq!(second["summary"]["files_new"], 0);
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
    env.ok(&["verify", "--read-data"]);
    assert!(env.ok(&["ls", "-R", "latest"]).contains("big.bin"));
    env.ok(&["forget", first["id"].as_str().unwrap()]);
    env.ok(&["clean", "--keep-forgotten", "0"]);
    env.ok(&["verify"]);
    // The same repository read locally holds the same snapshots.
    let mut local = Env::new();
    local.location = env.repo.display().to_string();
    local.password_file = env.password_file.clone();
    assert_eq!(local.json(&["log"]), env.json(&["log"]));
    // restic's spelling names it too.
    let mut restic_style = Env::over_sftp(&sshd);
    restic_style.password_file = env.password_file.clone();
    restic_style.location = format!("sftp:root@127.0.0.1:{}", env.repo.display());
    restic_style
        .extra
        .extend(["--retry-lock".into(), "0".into()]);
    let out = restic_style.run(&["log"]);
    // Port 22 is not this server's: a clear connection error, not a folder.
    assert!(!out.status.success());
    assert!(stderr(&out).contains("127.0.0.1"), "{}", stderr(&out));
    assert!(!std::path::Path::new("sftp:root@127.0.0.1:").exists());
}

#[test]
fn clean_removes_what_killed_writes_left_through_either_client() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    for client in CLIENTS {
        let env = over_sftp_with(&sshd, client);
        init(&env);
        let source = env.path("source");
        make_rich_tree(&source);
        env.snapshot(&source);
        clean_removes_only_stale_temporaries(&env, client);
    }
}

#[test]
fn unknown_and_changed_host_keys_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    for client in CLIENTS {
        host_keys_are_checked(&sshd, client);
    }
}

fn host_keys_are_checked(sshd: &Sshd, client: &str) {
    let mut env = over_sftp_with(sshd, client);
    let known_hosts = env.path("known_hosts");
    env.extra[3] = known_hosts.display().to_string();

    // Unknown: refused, with the fingerprint and how to accept it.
    fs::write(&known_hosts, "").unwrap();
    let out = env.run(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{client}: {message}");
    assert!(
        message.contains("not known") && message.contains("SHA256:"),
        "{client}: {message}"
    );
    assert!(message.contains("ssh-keyscan"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!env.repo.exists(), "nothing was written");

    // Changed: another key listed for this host and port.
    let other = env.path("other_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {other_pub}", sshd.port),
    )
    .unwrap();
    let out = env.run(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{client}: {message}");
    assert!(message.contains("HAS CHANGED"), "{client}: {message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!env.repo.exists(), "nothing was written");

    // The right key: accepted.
    fs::copy(&sshd.known_hosts, &known_hosts).unwrap();
    init(&env);
}

#[test]
fn a_lost_link_mid_snapshot_is_a_clear_error_and_the_rerun_resumes() {
    lost_link_mid_snapshot("openssh");
}

#[test]
fn a_lost_link_of_the_builtin_client_is_a_clear_error_and_the_rerun_resumes() {
    lost_link_mid_snapshot("builtin");
}

fn lost_link_mid_snapshot(client: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let mut sshd = Sshd::start(&scratch.path().join("sshd"));
    let env = over_sftp_with(&sshd, client);
    env.ok(&[
        "init",
        "--kdf-memory",
        "8192",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]);
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    for n in 0..12 {
        write_random_file(&source.join(format!("f{n:02}")), 8 << 20, 300 + n);
    }
    let child = env
        .command(&["snapshot", source.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once some packs have landed.
    let packs = |env: &Env| walk_files(&env.repo.join("packs"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs(&env) < 5 {
        assert!(Instant::now() < deadline, "no packs arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    sshd.kill();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let message = stderr(&out);
    assert!(
        !out.status.success(),
        "the snapshot succeeded without a server"
    );
    assert!(message.contains("127.0.0.1:"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up only after {:?}",
        started.elapsed()
    );
    // No partial file under a real name.
    for entry in walkdir(&env.repo.join("packs")) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with('.') {
            let data = fs::read(&entry).unwrap();
            assert_eq!(
                mapache_store::Id::hash_of(&data).to_hex(),
                name,
                "partial pack {name}"
            );
        }
    }
    let landed = packs(&env);
    sshd.resume();
    let rerun = env.snapshot(&source);
    let added = rerun["summary"]["bytes_added"].as_u64().unwrap();
    // What the killed run stored is used again: 1 MiB packs, random data.
    assert!(
        added + (landed as u64 - 2) * 1_000_000 <= 96 << 20,
        "rerun added {added} bytes though {landed} packs had landed"
    );
    env.ok(&["verify", "--read-data"]);
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn walk_files(dir: &std::path::Path) -> usize {
    walkdir(dir)
        .iter()
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .count()
}

#[cfg(feature = "fuse")]
#[test]
fn the_mount_reads_a_repository_over_sftp() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let env = Env::over_sftp(&sshd);
    init(&env);
    snapshot_restore_and_mount(&env);
}

#[test]
fn the_cache_keeps_index_snapshots_and_trees_and_refetches_damaged_entries() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let mut env = Env::over_sftp(&sshd);
    let cache_root = env.path("cache");
    env.extra
        .extend(["--cache-dir".into(), cache_root.display().to_string()]);
    init(&env);
    let source = env.path("source");
    make_rich_tree(&source);
    env.snapshot(&source);
    env.snapshot(&source);
    env.ok(&["log"]);
    let caches: Vec<_> = fs::read_dir(&cache_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "one cache per repository");
    let cache = &caches[0];
    let names = |kind: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(cache.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    let repo_names = |kind: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(env.repo.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("snapshots"), repo_names("snapshots"));
    assert_eq!(names("index"), repo_names("index"));
    // The tree packs, and only those, are kept.
    let repo = env.open_repo();
    let tree_packs: std::collections::BTreeSet<String> = repo
        .index()
        .iter()
        .filter(|(_, l)| l.blob_type == mapache_store::BlobType::Tree)
        .map(|(_, l)| l.pack.0.to_hex())
        .collect();
    let cached_packs = names("packs");
    assert!(!cached_packs.is_empty());
    assert!(
        cached_packs.iter().all(|p| tree_packs.contains(p)),
        "a data pack was cached"
    );

    // A damaged entry is fetched again, not trusted.
    let entry = cache.join("snapshots").join(&names("snapshots")[0]);
    let mut bytes = fs::read(&entry).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&entry, &bytes).unwrap();
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 2);
    assert_ne!(
        fs::read(&entry).unwrap(),
        bytes,
        "the damaged entry was replaced"
    );
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);

    // `cache` lists it; --clear removes it; --no-cache makes none.
    let listed = env.json(&["cache"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    env.ok(&["cache", "--clear"]);
    assert!(fs::read_dir(&cache_root).unwrap().next().is_none());
    env.ok(&["--no-cache", "log"]);
    assert!(fs::read_dir(&cache_root).unwrap().next().is_none());
}

#[test]
fn a_repository_20_ms_away_works() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let proxy = crate::util::DelayProxy::start(sshd.port, 20);
    let mut env = Env::over_sftp(&sshd);
    env.location = format!("sftp://root@127.0.0.1:{}{}", proxy.port, env.repo.display());
    // The proxy's port serves the same host key.
    let known = fs::read_to_string(&sshd.known_hosts).unwrap();
    let key = known.split_once(' ').unwrap().1;
    let known_hosts = env.path("known_hosts");
    fs::write(&known_hosts, format!("[127.0.0.1]:{} {key}", proxy.port)).unwrap();
    env.extra[3] = known_hosts.display().to_string();
    init(&env);
    snapshot_restore_and_mount(&env);
}

#[test]
fn without_openssh_the_builtin_client_carries_everything() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let mut env = Env::over_sftp(&sshd);
    // A PATH without ssh: `auto` falls back to the built-in client.
    let bin = env.path("bin-without-ssh");
    fs::create_dir_all(&bin).unwrap();
    for tool in ["fusermount3", "fusermount"] {
        for dir in ["/usr/bin", "/bin"] {
            let found = std::path::Path::new(dir).join(tool);
            if found.exists() && !bin.join(tool).exists() {
                std::os::unix::fs::symlink(&found, bin.join(tool)).unwrap();
            }
        }
    }
    env.vars.push(("PATH".into(), bin.display().to_string()));
    init(&env);
    snapshot_restore_and_mount(&env);
    // The same with OpenSSH asked for: a clear error.
    let mut forced = Env::over_sftp(&sshd);
    forced.vars = env.vars.clone();
    forced.location = env.location.clone();
    forced.password_file = env.password_file.clone();
    forced
        .extra
        .extend(["--ssh-client".into(), "openssh".into()]);
    let out = forced.run(&["log"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot run ssh"), "{}", stderr(&out));
}

#[test]
fn a_host_alias_of_the_ssh_configuration_names_the_repository() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let mut env = Env::new();
    // ssh reads ~/.ssh/config of the user's passwd entry, not of $HOME:
    // a test cannot give it one, so it names the file.
    let config = env.path("ssh_config");
    fs::write(
        &config,
        format!(
            "Host backup-box\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            sshd.port,
            sshd.client_key.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    // No user, port, key or known_hosts on mapache's command line.
    env.extra = vec!["--ssh-config".into(), config.display().to_string()];
    env.location = format!("sftp://backup-box{}", env.repo.display());
    init(&env);
    let source = env.path("source");
    make_rich_tree(&source);
    env.snapshot(&source);
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
    assert!(env.repo.join("config").is_file());
}

#[test]
fn ssh_agent_keys_log_in_with_either_client() {
    let scratch = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&scratch.path().join("sshd"));
    let agent = SshAgent::start(&scratch.path().join("agent.sock"));
    agent.add(&sshd.client_key);
    for client in CLIENTS {
        let mut env = Env::new();
        env.location = sshd.url(&env.repo);
        // A home without keys: only the agent has one.
        let home = env.path("home");
        fs::create_dir_all(&home).unwrap();
        env.vars.push(("HOME".into(), home.display().to_string()));
        env.vars
            .push(("SSH_AUTH_SOCK".into(), agent.socket.display().to_string()));
        env.extra = vec![
            "--ssh-known-hosts".into(),
            sshd.known_hosts.display().to_string(),
            "--ssh-client".into(),
            client.into(),
        ];
        init(&env);
        let source = env.path("source");
        make_rich_tree(&source);
        env.snapshot(&source);
        assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 1, "{client}");
        // Without the agent: refused, in one line, naming the host.
        env.vars.retain(|(k, _)| k != "SSH_AUTH_SOCK");
        let out = env.run(&["log"]);
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{client}: {message}");
        assert!(message.contains("cannot log in"), "{client}: {message}");
        assert_eq!(message.lines().count(), 1, "{client}: {message}");
    }
}

/// An ssh-agent on a socket of its own, stopped when dropped.
struct SshAgent {
    socket: std::path::PathBuf,
    pid: u32,
}

impl SshAgent {
    fn start(socket: &std::path::Path) -> SshAgent {
        let out = std::process::Command::new("ssh-agent")
            .arg("-a")
            .arg(socket)
            .arg("-s")
            .output()
            .expect("run ssh-agent");
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let pid = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse().ok())
            .expect("ssh-agent says its pid");
        SshAgent {
            socket: socket.to_path_buf(),
            pid,
        }
    }

    fn add(&self, key: &std::path::Path) {
        let out = std::process::Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("run ssh-add");
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.pid.to_string())
            .status();
    }
}
