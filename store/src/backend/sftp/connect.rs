//! Opening one SSH session with an SFTP channel: TCP, the host key
//! checked against known_hosts (strictly), then the login.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ssh2::{CheckResult, HashType, KnownHostFileKind, MethodType, Session, Sftp};

use super::SftpOptions;
use crate::backend::location::SftpLocation;
use crate::error::{Error, Result};

/// Ciphers in the order asked for (libssh2 drops those it lacks).
const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
     chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";

/// One logged-in session and its SFTP channel.
pub(super) struct Connection {
    // Declared first: the channel is closed before its session.
    pub sftp: Sftp,
    _session: Session,
}

/// An error of the link or the login, naming the host.
pub(super) fn link_error(location: &SftpLocation, what: impl std::fmt::Display) -> Error {
    Error::io(
        format!("{}:{}", location.host, location.port),
        std::io::Error::other(what.to_string()),
    )
}

/// Connects, checks the host key and logs in.
pub(super) fn connect(location: &SftpLocation, options: &SftpOptions) -> Result<Connection> {
    let address = (location.host.as_str(), location.port)
        .to_socket_addrs()
        .map_err(|e| link_error(location, format!("cannot resolve the host: {e}")))?
        .next()
        .ok_or_else(|| link_error(location, "the host has no address"))?;
    let tcp = TcpStream::connect_timeout(&address, options.timeout)
        .map_err(|e| link_error(location, format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new().map_err(|e| link_error(location, e))?;
    session.set_tcp_stream(tcp);
    // AES-GCM first: with AES-NI it costs a fraction of the CTR + HMAC
    // pairs libssh2 otherwise prefers, and a remote restore is bound by
    // what the link's cipher can carry on the client's cores.
    for direction in [MethodType::CryptCs, MethodType::CryptSc] {
        let _ = session.method_pref(direction, PREFERRED_CIPHERS);
    }
    session.set_timeout(options.timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    session
        .handshake()
        .map_err(|e| link_error(location, format!("SSH handshake failed: {e}")))?;
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

/// The known_hosts file to check against.
fn known_hosts_file(options: &SftpOptions) -> PathBuf {
    options
        .known_hosts
        .clone()
        .unwrap_or_else(|| home().join(".ssh").join("known_hosts"))
}

fn home() -> PathBuf {
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
    let (host, port) = (location.host.as_str(), location.port);
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
    let user = location.user.as_str();
    let mut tried = Vec::new();
    if let Some(key) = &options.key_file {
        if !key.exists() {
            return Err(Error::InvalidInput(format!(
                "{}: no such key file",
                key.display()
            )));
        }
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

/// How long to wait for the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
