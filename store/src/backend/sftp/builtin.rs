//! The built-in SSH client (libssh2), for hosts without OpenSSH's `ssh`
//! (the static binary in an empty root): TCP, the host key checked
//! against known_hosts (strictly), the login, then SFTP.
//!
//! It costs several times the CPU of OpenSSH's client per byte (libssh2
//! decrypts AES-GCM 16 bytes per call and copies each block), so it is
//! the fallback, not the default.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};

use base64::Engine;
use ssh2::{
    CheckResult, ErrorCode, HashType, KnownHostFileKind, MethodType, OpenFlags, OpenType, Session,
    Sftp,
};

use super::channel::{Channel, Failure, Listed, Status};
use super::SftpOptions;
use crate::backend::location::SftpLocation;
use crate::error::{Error, Result};

/// SFTP status codes (draft-ietf-secsh-filexfer-02).
const NO_SUCH_FILE: i32 = 2;
const PERMISSION_DENIED: i32 = 3;

/// Ciphers in the order asked for (libssh2 drops those it lacks).
const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
     chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";

/// One logged-in session and its SFTP channel.
pub(super) struct Connection {
    // Declared first: the channel is closed before its session.
    sftp: Sftp,
    _session: Session,
}

/// An error of the link or the login, naming the host.
pub(super) fn link_error(location: &SftpLocation, what: impl std::fmt::Display) -> Error {
    Error::io(
        format!("{}:{}", location.host, location.port_number()),
        std::io::Error::other(what.to_string()),
    )
}

/// Connects, checks the host key and logs in.
pub(super) fn connect(location: &SftpLocation, options: &SftpOptions) -> Result<Connection> {
    let session = handshake(location, options)?;
    check_host_key(&session, location, options)?;
    log_in(&session, location, options)?;
    let sftp = session
        .sftp()
        .map_err(|e| link_error(location, format!("the server offers no SFTP: {e}")))?;
    Ok(Connection {
        sftp,
        _session: session,
    })
}

/// Checks the host's key against known_hosts as `connect` does, without
/// logging in: the error names the key's fingerprint.
pub(super) fn check_host(location: &SftpLocation, options: &SftpOptions) -> Result<()> {
    check_host_key(&handshake(location, options)?, location, options)
}

/// A TCP connection and the SSH handshake over it.
fn handshake(location: &SftpLocation, options: &SftpOptions) -> Result<Session> {
    let address = (location.host.as_str(), location.port_number())
        .to_socket_addrs()
        .map_err(|e| link_error(location, format!("cannot resolve the host: {e}")))?
        .next()
        .ok_or_else(|| link_error(location, "the host has no address"))?;
    let tcp = TcpStream::connect_timeout(&address, options.timeout)
        .map_err(|e| link_error(location, format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new().map_err(|e| link_error(location, e))?;
    session.set_tcp_stream(tcp);
    // AES-GCM first: it costs libssh2 less than the CTR + HMAC pairs it
    // otherwise prefers.
    for direction in [MethodType::CryptCs, MethodType::CryptSc] {
        let _ = session.method_pref(direction, PREFERRED_CIPHERS);
    }
    session.set_timeout(options.timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    session
        .handshake()
        .map_err(|e| link_error(location, format!("SSH handshake failed: {e}")))?;
    Ok(session)
}

/// The known_hosts file to check against.
fn known_hosts_file(options: &SftpOptions) -> PathBuf {
    options
        .known_hosts
        .clone()
        .unwrap_or_else(|| home().join(".ssh").join("known_hosts"))
}

/// The user's home folder (`/` without one).
pub(super) fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Refuses a host whose key known_hosts does not list, or lists
/// differently.
fn check_host_key(session: &Session, location: &SftpLocation, options: &SftpOptions) -> Result<()> {
    let (key, _) = session
        .host_key()
        .ok_or_else(|| link_error(location, "the server showed no host key"))?;
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|hash| base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash))
        .unwrap_or_default();
    let file = known_hosts_file(options);
    let mut known = session.known_hosts().map_err(|e| link_error(location, e))?;
    if file.exists() {
        known
            .read_file(&file, KnownHostFileKind::OpenSSH)
            .map_err(|e| link_error(location, format!("cannot read {}: {e}", file.display())))?;
    }
    let (host, port) = (location.host.as_str(), location.port_number());
    let named = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    match known.check_port(host, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::NotFound => Err(Error::InvalidInput(format!(
            "the host key of {named} is not known (not in {}); its fingerprint is SHA256:{fingerprint}. \
             If that is the server's key, accept it with `ssh-keyscan -p {port} {host} >> {}` \
             (or log in once with ssh)",
            file.display(),
            file.display()
        ))),
        CheckResult::Mismatch => Err(Error::InvalidInput(format!(
            "THE HOST KEY OF {named} HAS CHANGED (now SHA256:{fingerprint}; {} lists another): someone \
             may be intercepting the connection. Nothing was sent. If the server was reinstalled, \
             remove the old key with `ssh-keygen -R '{named}' -f {}`",
            file.display(),
            file.display()
        ))),
        CheckResult::Failure => Err(link_error(location, "the host key could not be checked")),
    }
}

/// Logs in with the key file given, else through ssh-agent, else with the
/// usual key files of ~/.ssh.
fn log_in(session: &Session, location: &SftpLocation, options: &SftpOptions) -> Result<()> {
    let user = &location.user_name();
    let mut tried = Vec::new();
    if let Some(key) = &options.key_file {
        if session.userauth_pubkey_file(user, None, key, None).is_ok() {
            return Ok(());
        }
        return Err(Error::InvalidInput(format!(
            "{user}@{} did not accept the key {}",
            location.host,
            key.display()
        )));
    }
    if session.userauth_agent(user).is_ok() && session.authenticated() {
        return Ok(());
    }
    tried.push("ssh-agent".to_string());
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let key = home().join(".ssh").join(name);
        if !Path::new(&key).exists() {
            continue;
        }
        if session.userauth_pubkey_file(user, None, &key, None).is_ok() {
            return Ok(());
        }
        tried.push(key.display().to_string());
    }
    Err(Error::InvalidInput(format!(
        "cannot log in to {user}@{}: no key was accepted (tried {}); give one with --ssh-key",
        location.host,
        tried.join(", ")
    )))
}

impl From<ssh2::Error> for Failure {
    fn from(e: ssh2::Error) -> Failure {
        match e.code() {
            ErrorCode::SFTP(NO_SUCH_FILE) => Failure::Answer(Status::NoSuchFile),
            ErrorCode::SFTP(PERMISSION_DENIED) => Failure::Answer(Status::PermissionDenied),
            ErrorCode::SFTP(_) => Failure::Answer(Status::Other(e.message().to_string())),
            ErrorCode::Session(_) => Failure::Link(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    /// Reads and writes of a remote file report ssh2's errors wrapped in
    /// I/O errors.
    fn from(e: std::io::Error) -> Failure {
        let answered = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ssh2::Error>())
            .is_some_and(is_answer);
        if answered {
            Failure::Other(Error::io("remote file", e))
        } else {
            Failure::Link(e.to_string())
        }
    }
}

fn is_answer(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(_))
}

impl Channel for Connection {
    fn concurrent(&self) -> bool {
        false
    }

    fn read_dir(&self, dir: &Path) -> std::result::Result<Vec<Listed>, Failure> {
        let entries = self.sftp.readdir(dir)?;
        Ok(entries
            .into_iter()
            .filter_map(|(path, stat)| {
                Some(Listed {
                    name: path.file_name()?.to_str()?.to_string(),
                    size: stat.size.unwrap_or(0),
                    modified: stat
                        .mtime
                        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)),
                })
            })
            .collect())
    }

    fn size(&self, path: &Path) -> std::result::Result<u64, Failure> {
        Ok(self.sftp.stat(path)?.size.unwrap_or(0))
    }

    fn make_dir(&self, dir: &Path) -> std::result::Result<(), Failure> {
        match self.sftp.mkdir(dir, 0o700) {
            Ok(()) => Ok(()),
            Err(e) if is_answer(&e) && self.sftp.stat(dir).is_ok() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn read_at(
        &self,
        path: &Path,
        offset: u64,
        buf: &mut [u8],
    ) -> std::result::Result<usize, Failure> {
        let mut file = self.sftp.open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }

    fn read_all(&self, path: &Path) -> std::result::Result<Vec<u8>, Failure> {
        let mut file = self.sftp.open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> std::result::Result<(), Failure> {
        let mut file = self.sftp.open_mode(
            path,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            0o600,
            OpenType::File,
        )?;
        file.write_all(data)?;
        // Servers without the fsync extension answer "unsupported"; the
        // rename that follows still makes the whole file appear at once.
        let _ = file.fsync();
        Ok(())
    }

    /// SFTP version 3 (all libssh2 speaks) cannot rename onto an existing
    /// name: the old file is removed first, which leaves a moment
    /// without it.
    fn replace(&self, from: &Path, to: &Path) -> std::result::Result<(), Failure> {
        match self.sftp.rename(from, to, None) {
            Ok(()) => Ok(()),
            Err(e) if is_answer(&e) && self.sftp.stat(to).is_ok() => {
                self.sftp.unlink(to)?;
                Ok(self.sftp.rename(from, to, None)?)
            }
            Err(e) => {
                let _ = self.sftp.unlink(from);
                Err(e.into())
            }
        }
    }

    /// Renaming onto an existing name fails: the existing file stays.
    fn place_same(&self, from: &Path, to: &Path) -> std::result::Result<(), Failure> {
        self.place_new(from, to).map(|_| ())
    }

    fn place_new(&self, from: &Path, to: &Path) -> std::result::Result<bool, Failure> {
        match self.sftp.rename(from, to, None) {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = self.sftp.unlink(from);
                if is_answer(&e) && self.sftp.stat(to).is_ok() {
                    Ok(false)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    fn remove(&self, path: &Path) -> std::result::Result<(), Failure> {
        Ok(self.sftp.unlink(path)?)
    }
}
