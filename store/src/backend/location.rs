//! Repository strings: a local folder, or a remote store named by a URL.
//! restic's forms are accepted too, so that a user can carry theirs over.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a repository lives, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local folder (also `file://...`).
    Local(PathBuf),
    /// A folder on a host reached by SFTP.
    Sftp(SftpLocation),
}

/// `sftp://user@host:port/path`, or restic's `sftp:user@host:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpLocation {
    /// Login name (default: the local user's).
    pub user: String,
    /// Host name or address.
    pub host: String,
    /// TCP port (default 22).
    pub port: u16,
    /// Folder of the repository on the host (relative to the login
    /// folder unless it starts with `/`).
    pub path: String,
}

impl std::fmt::Display for SftpLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slash = if self.path.starts_with('/') {
            ""
        } else {
            "/~/"
        };
        write!(
            f,
            "sftp://{}@{}:{}{slash}{}",
            self.user, self.host, self.port, self.path
        )
    }
}

/// Schemes of remote stores this build does not speak yet.
const NOT_YET: [&str; 9] = [
    "s3", "rest", "b2", "azure", "gs", "rclone", "swift", "http", "https",
];

impl Location {
    /// Parses a repository string.
    pub fn parse(text: &str) -> Result<Location> {
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("sftp://") {
            return parse_sftp_url(text, rest).map(Location::Sftp);
        }
        if let Some(rest) = text.strip_prefix("sftp:") {
            return parse_sftp_restic(text, rest).map(Location::Sftp);
        }
        if let Some((scheme, _)) = text.split_once(':') {
            let scheme = scheme.to_ascii_lowercase();
            if NOT_YET.contains(&scheme.as_str()) || text.contains("://") {
                return Err(Error::InvalidInput(format!(
                    "{text}: {scheme} repositories are not supported yet; give a local folder or sftp://user@host/path"
                )));
            }
        }
        Ok(Location::Local(PathBuf::from(text)))
    }
}

fn bad(text: &str, why: &str) -> Error {
    Error::InvalidInput(format!("{text}: {why}"))
}

/// Splits `user@host` into its parts; the user defaults to the local one.
fn user_and_host(text: &str, login: &str) -> Result<(String, String)> {
    let (user, host) = match login.rsplit_once('@') {
        Some((user, host)) => (user.to_string(), host),
        None => (crate::host::username(), login),
    };
    if host.is_empty() || user.is_empty() {
        return Err(bad(text, "name a host, as in sftp://user@host/path"));
    }
    Ok((user, host.to_string()))
}

/// `user@host[:port]/path`, after `sftp://`. `/~/rest` is relative to the
/// login folder.
fn parse_sftp_url(text: &str, rest: &str) -> Result<SftpLocation> {
    let (authority, path) = rest.split_once('/').ok_or_else(|| {
        bad(
            text,
            "name the repository folder, as in sftp://user@host/path",
        )
    })?;
    let (login, port) = match authority.rsplit_once(':') {
        Some((login, port)) if !login.ends_with(']') || authority.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| bad(text, &format!("{port:?} is not a port number")))?;
            (login, port)
        }
        _ => (authority, 22),
    };
    let (user, host) = user_and_host(text, login)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = match path.strip_prefix("~/") {
        Some(relative) => relative.to_string(),
        None => format!("/{path}"),
    };
    if path.trim_matches('/').is_empty() {
        return Err(bad(text, "name the repository folder, not the root"));
    }
    Ok(SftpLocation {
        user,
        host,
        port,
        path: path.trim_end_matches('/').to_string(),
    })
}

/// restic's `user@host:/path` (or `host:relative/path`), after `sftp:`.
fn parse_sftp_restic(text: &str, rest: &str) -> Result<SftpLocation> {
    let (login, path) = rest
        .split_once(':')
        .ok_or_else(|| bad(text, "use sftp:user@host:/path or sftp://user@host/path"))?;
    let (user, host) = user_and_host(text, login)?;
    if path.trim_matches('/').is_empty() {
        return Err(bad(text, "name the repository folder, not the root"));
    }
    Ok(SftpLocation {
        user,
        host,
        port: 22,
        path: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp(user: &str, host: &str, port: u16, path: &str) -> Location {
        Location::Sftp(SftpLocation {
            user: user.into(),
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    #[test]
    fn repository_strings() {
        let cases = [
            ("/srv/repo", Location::Local("/srv/repo".into())),
            ("relative/repo", Location::Local("relative/repo".into())),
            ("file:///srv/repo", Location::Local("/srv/repo".into())),
            ("a:b", Location::Local("a:b".into())),
            (
                "sftp://ann@backup:2222/srv/repo",
                sftp("ann", "backup", 2222, "/srv/repo"),
            ),
            (
                "sftp://ann@backup/srv/repo/",
                sftp("ann", "backup", 22, "/srv/repo"),
            ),
            (
                "sftp://ann@backup/~/repo",
                sftp("ann", "backup", 22, "repo"),
            ),
            ("sftp://ann@[::1]:2222/r", sftp("ann", "::1", 2222, "/r")),
            (
                "sftp:ann@backup:/srv/repo",
                sftp("ann", "backup", 22, "/srv/repo"),
            ),
            ("sftp:ann@backup:repo", sftp("ann", "backup", 22, "repo")),
        ];
        for (text, expected) in cases {
            assert_eq!(Location::parse(text).unwrap(), expected, "{text}");
        }
        for text in [
            "sftp://backup",
            "sftp://ann@backup/",
            "sftp://ann@backup:x/r",
            "sftp:ann@backup",
            "s3:https://host/bucket",
            "rest:http://host/",
            "ftp://host/x",
        ] {
            assert!(Location::parse(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn displayed_as_a_url() {
        let Location::Sftp(location) = Location::parse("sftp:ann@backup:repo").unwrap() else {
            panic!()
        };
        assert_eq!(location.to_string(), "sftp://ann@backup:22/~/repo");
    }
}
