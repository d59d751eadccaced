//! `mapache ls`

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use mapache_store::tree::{Node, NodeKind, Timestamp};
use mapache_store::IndexedRepository;
use serde::Serialize;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;

/// List the files in a snapshot
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot id (a unique prefix is enough) or `latest`
    snapshot: String,

    /// Folder or file inside the snapshot (default: its root)
    #[arg(default_value = "/")]
    path: PathBuf,

    /// Long listing: type and mode, owner, size, modification time
    #[arg(short)]
    long: bool,

    /// Descend into folders
    #[arg(short = 'R', long)]
    recursive: bool,
}

#[derive(Serialize)]
struct Entry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    user: String,
    group: String,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time_string(t: Timestamp) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(t.secs, t.nanos)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| t.secs.to_string())
}

fn entry(path: &str, node: &Node) -> Entry {
    Entry {
        path: path.to_string(),
        kind: kind_name(node.kind),
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        user: node.user.clone(),
        group: node.group.clone(),
        size: node.size,
        mtime: time_string(node.mtime),
        link_target: (node.kind == NodeKind::Symlink)
            .then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
    }
}

struct Lister<'a> {
    repo: &'a IndexedRepository,
    long: bool,
    recursive: bool,
    json: Option<Vec<Entry>>,
    out: std::io::StdoutLock<'static>,
}

impl Lister<'_> {
    fn emit(&mut self, path: &str, node: &Node) -> Result<()> {
        if let Some(list) = &mut self.json {
            list.push(entry(path, node));
            return Ok(());
        }
        if self.long {
            let owner = if node.user.is_empty() {
                node.uid.to_string()
            } else {
                node.user.clone()
            };
            let group = if node.group.is_empty() {
                node.gid.to_string()
            } else {
                node.group.clone()
            };
            let mut line = format!(
                "{} {:>8} {:>8} {:>12} {} {path}",
                mode_string(node),
                owner,
                group,
                node.size,
                time_string(node.mtime)
            );
            if node.kind == NodeKind::Symlink {
                line.push_str(&format!(
                    " -> {}",
                    String::from_utf8_lossy(&node.link_target)
                ));
            }
            writeln!(self.out, "{line}")?;
        } else {
            writeln!(self.out, "{path}")?;
        }
        Ok(())
    }

    fn list_dir(&mut self, dir: &str, nodes: &[Node]) -> Result<()> {
        for node in nodes {
            let path = format!("{}/{}", dir.trim_end_matches('/'), node.name_lossy());
            self.emit(&path, node)?;
            if self.recursive && node.kind == NodeKind::Dir {
                if let Some(id) = node.subtree {
                    let tree = self.repo.load_tree(&id)?;
                    self.list_dir(&path, &tree.nodes)?;
                }
            }
        }
        Ok(())
    }
}

/// Follows `path` from the root tree; returns the node it names (None for
/// the root itself) and the entries below it.
fn resolve(
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

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open_indexed()?;
    let (_, snapshot) = repo.find_snapshot(&args.snapshot)?;
    let root = repo.load_tree(&snapshot.tree)?;
    let (node, children) = resolve(&repo, root.nodes, &args.path)?;
    let mut lister = Lister {
        repo: &repo,
        long: args.long,
        recursive: args.recursive,
        json: global.json.then(Vec::new),
        out: std::io::stdout().lock(),
    };
    let shown = args.path.to_string_lossy().into_owned();
    match node {
        Some(node) if node.kind != NodeKind::Dir => lister.emit(&shown, &node)?,
        _ => lister.list_dir(&shown, &children)?,
    }
    if let Some(list) = lister.json.take() {
        drop(lister);
        print_json(&list)?;
    }
    Ok(Outcome::Success)
}
