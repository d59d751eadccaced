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
    /// A bucket (and a prefix in it) of an S3-compatible object store.
    S3(S3Location),
}

/// `s3://[endpoint/]bucket[/prefix]`, or restic's
/// `s3:[http[s]://]host[:port]/bucket[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The store's URL (`http://host:port` or `https://host`); none: the
    /// environment's (`AWS_ENDPOINT_URL`) or AWS's own.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Where in the bucket the repository's objects are (may be empty).
    pub prefix: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Some(endpoint) => write!(f, "s3:{endpoint}/{}", self.bucket)?,
            None => write!(f, "s3://{}", self.bucket)?,
        }
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// `sftp://user@host:port/path`, or restic's `sftp:user@host:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpLocation {
    /// Login name, if the string gives one (else ssh's configuration
    /// decides, or the local user's).
    pub user: Option<String>,
    /// Host name or address (or a `Host` alias of ~/.ssh/config, which
    /// only OpenSSH's client knows).
    pub host: String,
    /// TCP port, if the string gives one (else ssh's configuration
    /// decides, or 22).
    pub port: Option<u16>,
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
            self.user_name(),
            self.host,
            self.port_number(),
            self.path
        )
    }
}

impl SftpLocation {
    /// The login name given, else the local user's.
    pub fn user_name(&self) -> String {
        self.user.clone().unwrap_or_else(crate::host::username)
    }

    /// The port given, else 22.
    pub fn port_number(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// Schemes of remote stores this build does not speak yet.
const NOT_YET: [&str; 8] = [
    "rest", "b2", "azure", "gs", "rclone", "swift", "http", "https",
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
        if let Some(rest) = text.strip_prefix("s3://") {
            return parse_s3(text, rest, "https").map(Location::S3);
        }
        if let Some(rest) = text.strip_prefix("s3:") {
            return parse_s3_restic(text, rest).map(Location::S3);
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

/// Splits `[user@]host` into its parts.
fn user_and_host(text: &str, login: &str) -> Result<(Option<String>, String)> {
    let (user, host) = match login.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, login),
    };
    if host.is_empty() || user.as_ref().is_some_and(|u| u.is_empty()) {
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
    let (user, host_port) = user_and_host(text, authority)?;
    let port_number = |port: &str| {
        port.parse::<u16>()
            .map_err(|_| bad(text, &format!("{port:?} is not a port number")))
    };
    // `[v6 address]:port`, `host:port`, or a host alone.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad(text, "an address in [ ] lacks its ]"))?;
            match after.strip_prefix(':') {
                Some(port) => (host.to_string(), Some(port_number(port)?)),
                None if after.is_empty() => (host.to_string(), None),
                None => return Err(bad(text, "expected :port after the address")),
            }
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port_number(port)?)),
            None => (host_port, None),
        },
    };
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
        port: None,
        path: path.trim_end_matches('/').to_string(),
    })
}

/// Whether the first part of `s3://first/...` names a host rather than a
/// bucket: it has a port, or is an address or a dotted name that a bucket
/// name would rarely be (`s3://s3.example.com/bucket`).
fn names_a_host(first: &str) -> bool {
    first.contains(':')
        || first.parse::<std::net::IpAddr>().is_ok()
        || first == "localhost"
        || (first.contains('.')
            && first
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
            && first.split('.').count() >= 3)
}

/// `[endpoint/]bucket[/prefix]`, after `s3://`.
fn parse_s3(text: &str, rest: &str, scheme: &str) -> Result<S3Location> {
    let mut parts = rest.trim_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    let (endpoint, rest) = if names_a_host(first) {
        (
            Some(format!("{scheme}://{first}")),
            parts.next().unwrap_or_default(),
        )
    } else {
        (None, rest.trim_matches('/'))
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(
            text,
            "name a bucket, as in s3://host:port/bucket/prefix",
        ));
    }
    Ok(S3Location {
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// restic's `[http[s]://]host[:port]/bucket[/prefix]`, after `s3:`; the
/// host is always given (an explicit `http://` allows plain HTTP).
fn parse_s3_restic(text: &str, rest: &str) -> Result<S3Location> {
    let (scheme, rest) = match rest.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        Some(_) => {
            return Err(bad(
                text,
                "use s3:https://host/bucket or s3:http://host:port/bucket",
            ))
        }
        None => ("https", rest),
    };
    let (host, rest) = rest
        .trim_matches('/')
        .split_once('/')
        .ok_or_else(|| bad(text, "name a bucket, as in s3:https://host/bucket"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || bucket.is_empty() {
        return Err(bad(
            text,
            "name a host and a bucket, as in s3:https://host/bucket",
        ));
    }
    Ok(S3Location {
        endpoint: Some(format!("{scheme}://{host}")),
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Location {
        Location::Sftp(SftpLocation {
            user: user.map(str::to_string),
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    fn s3(endpoint: Option<&str>, bucket: &str, prefix: &str) -> Location {
        Location::S3(S3Location {
            endpoint: endpoint.map(str::to_string),
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn s3_strings() {
        let cases = [
            ("s3://bucket", s3(None, "bucket", "")),
            (
                "s3://bucket/some/prefix/",
                s3(None, "bucket", "some/prefix"),
            ),
            (
                "s3://127.0.0.1:3900/bucket/p",
                s3(Some("https://127.0.0.1:3900"), "bucket", "p"),
            ),
            (
                "s3://s3.example.com/bucket",
                s3(Some("https://s3.example.com"), "bucket", ""),
            ),
            (
                "s3:http://127.0.0.1:3900/bucket/p",
                s3(Some("http://127.0.0.1:3900"), "bucket", "p"),
            ),
            (
                "s3:https://host:9000/bucket",
                s3(Some("https://host:9000"), "bucket", ""),
            ),
            (
                "s3:s3.amazonaws.com/bucket/x",
                s3(Some("https://s3.amazonaws.com"), "bucket", "x"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Location::parse(text).unwrap(), expected, "{text}");
        }
        for text in [
            "s3://",
            "s3:http://host",
            "s3:ftp://host/bucket",
            "s3://127.0.0.1:3900/",
        ] {
            assert!(Location::parse(text).is_err(), "{text} accepted");
        }
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
                sftp(Some("ann"), "backup", Some(2222), "/srv/repo"),
            ),
            (
                "sftp://ann@backup/srv/repo/",
                sftp(Some("ann"), "backup", None, "/srv/repo"),
            ),
            (
                "sftp://ann@backup/~/repo",
                sftp(Some("ann"), "backup", None, "repo"),
            ),
            (
                "sftp://ann@[::1]:2222/r",
                sftp(Some("ann"), "::1", Some(2222), "/r"),
            ),
            (
                "sftp:ann@backup:/srv/repo",
                sftp(Some("ann"), "backup", None, "/srv/repo"),
            ),
            (
                "sftp:ann@backup:repo",
                sftp(Some("ann"), "backup", None, "repo"),
            ),
            ("sftp://backup/r", sftp(None, "backup", None, "/r")),
            ("sftp:backup:/r", sftp(None, "backup", None, "/r")),
        ];
        for (text, expected) in cases {
            assert_eq!(Location::parse(text).unwrap(), expected, "{text}");
        }
        for text in [
            "sftp://backup",
            "sftp://ann@backup/",
            "sftp://ann@backup:x/r",
            "sftp:ann@backup",
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
