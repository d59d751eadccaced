//! SFTP through OpenSSH's `ssh`, as restic and borg reach their hosts:
//! the user's ~/.ssh/config (host aliases, ProxyJump, ports, users),
//! ssh-agent, security keys and OpenSSH's fast ciphers all apply. Each
//! session is one `ssh -s sftp` process; the SFTP protocol over its pipes
//! is spoken by `openssh-sftp-client`, with many requests in flight per
//! read or write.
//!
//! mapache adds to what the configuration says: strict host key checking
//! (an unknown or changed key is refused, never learnt), no prompts
//! (`BatchMode`), keep-alives that notice a dead link, and `--ssh-key` /
//! `--ssh-known-hosts` when given.

use std::ffi::OsString;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use futures::StreamExt;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::File;
use openssh_sftp_client::metadata::Permissions;
use openssh_sftp_client::{Sftp, SftpOptions as ClientOptions};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::runtime::Runtime;

use super::builtin::link_error;
use super::channel::{Channel, Failure, Listed, Status};
use super::SftpOptions;
use crate::backend::location::SftpLocation;
use crate::error::{Error, Result};

/// One `ssh` process carrying an SFTP session.
pub(super) struct OpensshChannel {
    // Declared first: the session ends before the process is killed.
    sftp: Sftp,
    _ssh: tokio::process::Child,
    runtime: Arc<Runtime>,
    timeout: std::time::Duration,
}

/// Whether OpenSSH's client is on the PATH.
pub(super) fn available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ssh").is_file()))
}

/// The options mapache gives `ssh` for `location`.
fn ssh_options(location: &SftpLocation, options: &SftpOptions) -> Vec<OsString> {
    let seconds = options.timeout.as_secs().max(1);
    let mut args: Vec<OsString> = Vec::new();
    if let Some(config) = &options.config_file {
        args.extend(["-F".into(), config.into()]);
    }
    for arg in [
        "-x".to_string(),
        "-a".into(),
        "-T".into(),
        "-oBatchMode=yes".into(),
        "-oStrictHostKeyChecking=yes".into(),
        format!("-oConnectTimeout={seconds}"),
        format!("-oServerAliveInterval={}", seconds.div_ceil(3)),
        "-oServerAliveCountMax=3".into(),
    ] {
        args.push(arg.into());
    }
    if let Some(port) = location.port {
        args.extend(["-p".into(), port.to_string().into()]);
    }
    if let Some(user) = &location.user {
        args.extend(["-l".into(), user.into()]);
    }
    if let Some(key) = &options.key_file {
        args.extend(["-i".into(), key.into(), "-oIdentitiesOnly=yes".into()]);
    }
    if let Some(known_hosts) = &options.known_hosts {
        let mut option = OsString::from("-oUserKnownHostsFile=");
        option.push(known_hosts);
        args.push(option);
    }
    args
}

/// The `ssh` process carrying the SFTP session for `location`.
fn command(location: &SftpLocation, options: &SftpOptions) -> tokio::process::Command {
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.args(ssh_options(location, options))
        .args(["-s", "--", &location.host, "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C meant for mapache (which stops
        // cleanly) must not cut the link under it.
        .process_group(0)
        .kill_on_drop(true);
    ssh
}

/// Where ssh's configuration really sends `location` (`ssh -G`): a host
/// alias resolved to its host name and port, and the known_hosts file
/// ssh checks.
fn resolved(location: &SftpLocation, options: &SftpOptions) -> Option<(SftpLocation, SftpOptions)> {
    let out = std::process::Command::new("ssh")
        .args(ssh_options(location, options))
        .args(["-G", "--", &location.host])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .map(str::to_string)
    };
    let real = SftpLocation {
        host: value("hostname")?,
        port: value("port")?.parse().ok(),
        user: value("user"),
        path: location.path.clone(),
    };
    let mut checked = options.clone();
    if let Some(files) = value("userknownhostsfile") {
        let first = files.split(' ').next().unwrap_or_default();
        checked.known_hosts = Some(match first.strip_prefix("~/") {
            Some(rest) => super::builtin::home().join(rest),
            None => first.into(),
        });
    }
    Some((real, checked))
}

/// Starts `ssh` and the SFTP session over it.
pub(super) fn connect(
    location: &SftpLocation,
    options: &SftpOptions,
    runtime: &Arc<Runtime>,
) -> Result<OpensshChannel> {
    if location.host.starts_with('-') {
        return Err(Error::InvalidInput(format!(
            "{location}: a host name cannot start with '-'"
        )));
    }
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let started = runtime.block_on(async {
        // Not found or not runnable: final (no link to try again).
        let mut ssh = command(location, options).spawn().map_err(|e| {
            Error::InvalidInput(format!(
                "cannot run ssh for {location}: {e} (--ssh-client builtin needs no ssh)"
            ))
        })?;
        let mut stderr = ssh.stderr.take().expect("piped");
        let collected = stderr_text.clone();
        let collector = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            collected.lock().push_str(&String::from_utf8_lossy(&buf));
        });
        let stdin = ssh.stdin.take().expect("piped");
        let stdout = ssh.stdout.take().expect("piped");
        // Requests go out at once: the default waits 0.5 ms to batch them,
        // which every one of the many sequential steps of a command pays.
        let session = Sftp::new(
            stdin,
            stdout,
            ClientOptions::new().flush_interval(std::time::Duration::ZERO),
        );
        match tokio::time::timeout(options.timeout * 2, session).await {
            Ok(Ok(sftp)) => Ok((sftp, ssh)),
            Ok(Err(e)) => {
                // ssh has said why on its stderr by the time it exits.
                let _ = tokio::time::timeout(options.timeout, ssh.wait()).await;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), collector).await;
                Err(e.to_string())
            }
            Err(_) => Err("the server did not answer".to_string()),
        }
        .map_err(|e| refusal(location, options, &stderr_text.lock(), e))
    })?;
    let (sftp, ssh) = started;
    Ok(OpensshChannel {
        sftp,
        _ssh: ssh,
        runtime: runtime.clone(),
        timeout: options.timeout,
    })
}

/// The error for an `ssh` that did not get to SFTP: a refused host key
/// or login is final (and said in mapache's words where it can be), the
/// rest is the link's.
fn refusal(location: &SftpLocation, options: &SftpOptions, said: &str, fallback: String) -> Error {
    let said: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.chars().all(|c| c == '@'))
        .collect();
    let has = |text: &str| said.iter().any(|line| line.contains(text));
    if has("Host key verification failed") || has("HOST IDENTIFICATION HAS CHANGED") {
        // libssh2 reads the same known_hosts file and can show the key's
        // fingerprint, which OpenSSH does not under strict checking; it
        // needs the host name and port the configuration resolves to.
        if let Some((real, checked)) = resolved(location, options) {
            if let Err(e @ Error::InvalidInput(_)) = super::builtin::check_host(&real, &checked) {
                return e;
            }
        }
        return Error::InvalidInput(format!(
            "ssh refused the host key of {}: {}",
            location.host,
            said.join(" ")
        ));
    }
    if has("Permission denied") {
        return Error::InvalidInput(format!(
            "cannot log in to {}: ssh says {:?}; give a key with --ssh-key or add one to ssh-agent",
            location.host,
            said.last().copied().unwrap_or_default()
        ));
    }
    let why = said.last().map_or(fallback, |line| line.to_string());
    link_error(location, why)
}

fn failure(e: openssh_sftp_client::Error) -> Failure {
    match e {
        openssh_sftp_client::Error::SftpError(kind, message) => Failure::Answer(match kind {
            SftpErrorKind::NoSuchFile => Status::NoSuchFile,
            SftpErrorKind::PermDenied => Status::PermissionDenied,
            _ => Status::Other(message.to_string()),
        }),
        other => Failure::Link(other.to_string()),
    }
}

impl OpensshChannel {
    /// Runs `op` on the runtime, as a lost link if it takes longer than
    /// the timeout.
    fn run<T>(
        &self,
        op: impl Future<Output = std::result::Result<T, Failure>>,
    ) -> std::result::Result<T, Failure> {
        self.runtime.block_on(async {
            match tokio::time::timeout(self.timeout, op).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Link(format!(
                    "no answer within {} s",
                    self.timeout.as_secs()
                ))),
            }
        })
    }
}

/// Bytes per request: what OpenSSH's server takes at most (it says so
/// with `limits@openssh.com`; the client splits requests further for a
/// server that takes less).
const CHUNK: usize = 256 * 1024 - 1024;

/// Moves `file`'s offset to `at` (local only: requests carry offsets).
async fn seek(file: &mut File, at: u64) -> std::result::Result<(), Failure> {
    file.seek(std::io::SeekFrom::Start(at))
        .await
        .map(|_| ())
        .map_err(|e| Failure::Other(Error::io("remote file", e)))
}

/// Reads `buf.len()` bytes from `offset` with one request per chunk, all
/// in flight at once; returns how many the file had.
async fn read_chunks(
    file: &File,
    offset: u64,
    buf: &mut [u8],
    chunk: usize,
) -> std::result::Result<usize, Failure> {
    let reads = buf.chunks_mut(chunk).enumerate().map(|(n, part)| {
        let mut file = file.clone();
        let at = offset + (n * chunk) as u64;
        async move {
            seek(&mut file, at).await?;
            let mut filled = 0;
            // A server may answer with less than asked: ask for the rest.
            while filled < part.len() {
                let want = (part.len() - filled) as u32;
                let got = file
                    .read(want, bytes::BytesMut::with_capacity(want as usize))
                    .await
                    .map_err(failure)?;
                match got {
                    Some(data) if !data.is_empty() => {
                        part[filled..filled + data.len()].copy_from_slice(&data);
                        filled += data.len();
                    }
                    _ => break,
                }
            }
            Ok::<usize, Failure>(filled)
        }
    });
    // Where one chunk stops short, the file ends: later chunks must be
    // empty (else the file changed while being read).
    let mut total = 0;
    let mut ended = false;
    for got in futures::future::try_join_all(reads).await? {
        if ended && got > 0 {
            return Err(Failure::Link("the file changed while being read".into()));
        }
        ended |= got < chunk;
        total += got;
    }
    Ok(total)
}

impl Channel for OpensshChannel {
    fn concurrent(&self) -> bool {
        true
    }

    fn read_dir(&self, dir: &Path) -> std::result::Result<Vec<Listed>, Failure> {
        self.run(async {
            let mut fs = self.sftp.fs();
            let listing = fs.open_dir(dir).await.map_err(failure)?;
            let mut entries = Box::pin(listing.read_dir());
            let mut out = Vec::new();
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(failure)?;
                if let Some(name) = entry.filename().to_str() {
                    let metadata = entry.metadata();
                    out.push(Listed {
                        name: name.to_string(),
                        size: metadata.len().unwrap_or(0),
                        modified: metadata.modified().map(|at| at.as_system_time()),
                    });
                }
            }
            Ok(out)
        })
    }

    fn size(&self, path: &Path) -> std::result::Result<u64, Failure> {
        self.run(async {
            let metadata = self.sftp.fs().metadata(path).await.map_err(failure)?;
            Ok(metadata.len().unwrap_or(0))
        })
    }

    fn make_dir(&self, dir: &Path) -> std::result::Result<(), Failure> {
        self.run(async {
            let mut fs = self.sftp.fs();
            let made = fs
                .dir_builder()
                .permissions(Permissions::from(0o700))
                .create(dir)
                .await;
            match made {
                Ok(()) => Ok(()),
                Err(e @ openssh_sftp_client::Error::SftpError(..)) => {
                    match fs.metadata(dir).await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(failure(e)),
                    }
                }
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn read_at(
        &self,
        path: &Path,
        offset: u64,
        buf: &mut [u8],
    ) -> std::result::Result<usize, Failure> {
        self.run(async {
            let file = self.sftp.open(path).await.map_err(failure)?;
            let filled = read_chunks(&file, offset, buf, CHUNK).await;
            let _ = file.close().await;
            filled
        })
    }

    fn read_all(&self, path: &Path) -> std::result::Result<Vec<u8>, Failure> {
        self.run(async {
            let mut file = self.sftp.open(path).await.map_err(failure)?;
            let size = file.metadata().await.map_err(failure)?.len().unwrap_or(0);
            // One byte more than the size shows a file that grew.
            let mut data = vec![0; size as usize + 1];
            let filled = read_chunks(&file, 0, &mut data, CHUNK).await?;
            data.truncate(filled);
            if filled as u64 > size {
                // Grown meanwhile: the rest, in turn.
                seek(&mut file, filled as u64).await?;
                while let Some(more) = file
                    .read(CHUNK as u32, bytes::BytesMut::with_capacity(CHUNK))
                    .await
                    .map_err(failure)?
                {
                    if more.is_empty() {
                        break;
                    }
                    data.extend_from_slice(&more);
                }
            }
            let _ = file.close().await;
            Ok(data)
        })
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> std::result::Result<(), Failure> {
        self.run(async {
            let mut file = self
                .sftp
                .options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .await
                .map_err(failure)?;
            let mut private = file.clone();
            let permissions = async move {
                private
                    .set_permissions(Permissions::from(0o600))
                    .await
                    .map_err(failure)
            };
            let writes = data.chunks(CHUNK).enumerate().map(|(n, part)| {
                let mut file = file.clone();
                async move {
                    seek(&mut file, (n * CHUNK) as u64).await?;
                    file.write_all(part).await.map_err(failure)
                }
            });
            // The mode goes out with the writes, not a round trip before.
            futures::future::try_join(permissions, futures::future::try_join_all(writes)).await?;
            if self.sftp.support_fsync() {
                file.sync_all().await.map_err(failure)?;
            }
            file.close().await.map_err(failure)
        })
    }

    /// With `posix-rename@openssh.com` (every OpenSSH server) the
    /// replacement is atomic; without it the old file goes first.
    fn replace(&self, from: &Path, to: &Path) -> std::result::Result<(), Failure> {
        self.run(async {
            let mut fs = self.sftp.fs();
            if !self.sftp.support_posix_rename() {
                let _ = fs.remove_file(to).await;
            }
            fs.rename(from, to).await.map_err(failure)
        })
    }

    /// One atomic rename (the replaced file, if any, had the same bytes).
    fn place_same(&self, from: &Path, to: &Path) -> std::result::Result<(), Failure> {
        if !self.sftp.support_posix_rename() {
            return self.place_new(from, to).map(|_| ());
        }
        self.run(async { self.sftp.fs().rename(from, to).await.map_err(failure) })
    }

    /// A hard link (`hardlink@openssh.com`) fails where the name exists,
    /// so two writers of the same new name cannot both think it theirs.
    fn place_new(&self, from: &Path, to: &Path) -> std::result::Result<bool, Failure> {
        self.run(async {
            let mut fs = self.sftp.fs();
            let placed = if self.sftp.support_hardlink() {
                match fs.hard_link(from, to).await {
                    Ok(()) => Ok(true),
                    Err(e) => match fs.metadata(to).await {
                        Ok(_) => Ok(false),
                        Err(_) => Err(failure(e)),
                    },
                }
            } else {
                match fs.metadata(to).await {
                    Ok(_) => Ok(false),
                    Err(_) => fs.rename(from, to).await.map(|()| true).map_err(failure),
                }
            };
            let _ = fs.remove_file(from).await;
            placed
        })
    }

    fn remove(&self, path: &Path) -> std::result::Result<(), Failure> {
        self.run(async { self.sftp.fs().remove_file(path).await.map_err(failure) })
    }
}
