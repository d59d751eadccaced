//! A control channel to the process that has the staging area open (a
//! mount), so that `mapache commit` and `mapache stage ...` work while the
//! staging is mounted.
//!
//! The mount listens on an abstract Unix socket (no file to clean up)
//! named after the staging folder, and answers only callers of its own
//! user (or root), checked with `SO_PEERCRED`. One JSON request per
//! connection, one JSON answer.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::staging::{CommitRequest, StageAnswer, StageRequest};

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Commit the staging area.
    Commit(CommitRequest),
    /// Run a `stage` subcommand.
    Stage(StageRequest),
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The commit made this snapshot (hex id).
    Committed(String),
    /// Nothing changed since the base (hex id, if any): no snapshot.
    NothingToCommit(Option<String>),
    /// What the `stage` subcommand did or found.
    Staged(StageAnswer),
    /// It failed.
    Failed(String),
}

fn address(staging_dir: &Path) -> std::io::Result<SocketAddr> {
    let key = staging_dir
        .canonicalize()
        .unwrap_or_else(|_| staging_dir.to_path_buf());
    let hash = blake3::hash(key.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(format!("mapache-staging-{}", &hash.to_hex()[..32]))
}

fn same_user(stream: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) => {
            let me = nix::unistd::geteuid().as_raw();
            cred.uid() == me || cred.uid() == 0
        }
        Err(_) => false,
    }
}

/// Serves requests for the staging in `staging_dir` on a background
/// thread, for as long as the process lives.
pub fn serve(
    staging_dir: &Path,
    handler: impl Fn(ControlRequest) -> ControlResponse + Send + 'static,
) -> std::io::Result<()> {
    let listener = UnixListener::bind_addr(&address(staging_dir)?)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if !same_user(&stream) {
                    continue;
                }
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                let response = match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(request) => handler(request),
                    Err(e) => ControlResponse::Failed(format!("bad request: {e}")),
                };
                let mut answer = serde_json::to_string(&response).expect("serializable");
                answer.push('\n');
                let _ = stream.write_all(answer.as_bytes());
            }
        })?;
    Ok(())
}

/// Sends `request` to the process serving the staging in `staging_dir`.
/// Fails (connection refused) when nobody serves it, and when the server
/// runs as another user: abstract names are open to anyone, and a
/// squatter must not be able to answer "committed".
pub fn send(staging_dir: &Path, request: &ControlRequest) -> std::io::Result<ControlResponse> {
    let mut stream = UnixStream::connect_addr(&address(staging_dir)?)?;
    if !same_user(&stream) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the staging control socket belongs to another user",
        ));
    }
    let mut line = serde_json::to_string(request).expect("serializable");
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
