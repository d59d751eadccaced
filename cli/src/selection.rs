//! Choosing snapshots and entries on the command line: `latest` narrowed
//! by host, tag and path, `SNAPSHOT:/sub/path` and paths in snapshots, id
//! prefixes, times, groups, and pattern files.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use mapache_store::snapshot::Snapshot;
use mapache_store::tree::{Node, NodeKind};
use mapache_store::{IndexedRepository, Repository, SnapshotId};

/// Options that select snapshots (and narrow which one `latest` means).
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotFilter {
    /// Only snapshots of this host (`latest`: the newest of them)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Only snapshots with this tag; repeatable: all of them
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,

    /// Only snapshots of this source path; repeatable: all of them
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `snapshot` is selected.
    pub fn accepts(&self, snapshot: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &snapshot.host == h)
            && self.tag.iter().all(|t| snapshot.tags.contains(t))
            && self.paths.iter().all(|p| snapshot.paths.contains(p))
    }

    fn is_empty(&self) -> bool {
        self.host.is_none() && self.tag.is_empty() && self.paths.is_empty()
    }

    /// The snapshot `spec` names: `latest` (narrowed by this filter), an
    /// id or a unique prefix.
    pub fn find(&self, repo: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec != "latest" {
            if !self.is_empty() {
                bail!(
                    "--host, --tag and --path narrow `latest`; {spec} names one snapshot already"
                );
            }
            return Ok(repo.find_snapshot(spec)?);
        }
        if self.is_empty() {
            return Ok(repo.find_snapshot(spec)?);
        }
        repo.snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| self.accepts(s))
            .context("no snapshot matches --host/--tag/--path, so there is no `latest`")
    }
}

/// `SNAPSHOT` or `SNAPSHOT:/sub/path`: the snapshot and the path inside it.
pub fn split_sub_path(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((snapshot, path)) if path.starts_with('/') => (snapshot, Some(path)),
        _ => (spec, None),
    }
}

/// The lines of pattern files, after the patterns given directly.
pub fn with_pattern_files(patterns: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut all = patterns.to_vec();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read pattern file {}", file.display()))?;
        all.extend(text.lines().map(str::to_string));
    }
    Ok(all)
}

/// The one id among `candidates` that starts with the hex prefix `spec`;
/// an ambiguous prefix is an error that lists the candidates.
pub fn resolve_prefix<T: Copy + std::fmt::Display>(
    spec: &str,
    candidates: impl IntoIterator<Item = T>,
    what: &str,
) -> Result<T> {
    let prefix = spec.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{spec:?} is not a {what} id: give hex digits");
    }
    let found: Vec<T> = candidates
        .into_iter()
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no {what} {spec}"),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(10)
                .map(|id| id.to_string()[..16].to_string())
                .collect();
            let more = if many.len() > 10 {
                format!(" and {} more", many.len() - 10)
            } else {
                String::new()
            };
            bail!("{what} id {spec} is ambiguous: {}{more}", shown.join(", "))
        }
    }
}

/// The group `snapshot` belongs to when grouping by `fields`
/// (comma-separated: host, paths, tags; empty: one group), as a label.
pub fn group_key(fields: &str, snapshot: &Snapshot) -> Result<String> {
    let mut key = Vec::new();
    for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "host" => key.push(format!("host {}", snapshot.host)),
            "paths" => key.push(format!("paths {}", snapshot.paths.join(" "))),
            "tags" => {
                let mut tags = snapshot.tags.clone();
                tags.sort();
                key.push(format!("tags {}", tags.join(",")));
            }
            other => bail!("--group-by {other:?}: use host, paths and tags"),
        }
    }
    Ok(key.join(", "))
}

/// `YYYY-MM-DD[ HH:MM[:SS]]` in local time, as seconds since the epoch.
pub fn parse_local_time(text: &str) -> Result<i64> {
    use chrono::TimeZone;
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return chrono::Local
                .from_local_datetime(&t)
                .earliest()
                .map(|t| t.timestamp())
                .with_context(|| format!("{text} does not exist in the local time zone"));
        }
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("{text:?} is not a time: use YYYY-MM-DD[ HH:MM[:SS]]"))?;
    parse_local_time(&format!("{day} 00:00:00"))
}

/// Follows `path` from the entries of a snapshot's root tree; returns the
/// node it names (None for the root itself) and the entries below it.
pub fn resolve_path(
    repo: &IndexedRepository,
    root: Vec<Node>,
    path: &Path,
) -> Result<(Option<Node>, Vec<Node>)> {
    let mut nodes = root;
    let mut current: Option<Node> = None;
    for component in path.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            _ => bail!(
                "{}: use an absolute path inside the snapshot, without `..`",
                path.display()
            ),
        };
        let name = std::os::unix::ffi::OsStrExt::as_bytes(name);
        let Some(node) = nodes.iter().find(|n| n.name == name).cloned() else {
            bail!("{}: no such file or folder in the snapshot", path.display());
        };
        nodes = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(id)) => repo.load_tree(&id)?.nodes,
            _ => Vec::new(),
        };
        current = Some(node);
    }
    Ok((current, nodes))
}
