//! `mapache ls`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use mapache_store::tree::{Node, NodeKind};
use mapache_store::IndexedRepository;
use serde::Serialize;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;
use crate::selection::resolve_path;

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

    /// Sizes in KiB, MiB, GiB
    #[arg(short = 'H', long)]
    human_readable: bool,

    #[command(flatten)]
    filter: crate::selection::SnapshotFilter,
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
    /// The path's bytes, when it is not UTF-8 (`path` then has
    /// replacement characters and cannot be used to address the entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
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

fn entry(path: &str, raw: &[u8], node: &Node) -> Entry {
    Entry {
        path_bytes: std::str::from_utf8(raw).is_err().then(|| raw.to_vec()),
        path: path.to_string(),
        kind: kind_name(node.kind),
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        user: node.user.clone(),
        group: node.group.clone(),
        size: node.size,
        mtime: crate::output::local_time(node.mtime),
        link_target: (node.kind == NodeKind::Symlink)
            .then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
    }
}

struct Lister<'a> {
    repo: &'a IndexedRepository,
    long: bool,
    human: bool,
    recursive: bool,
    json: Option<Vec<Entry>>,
    out: std::io::StdoutLock<'static>,
}

impl Lister<'_> {
    fn emit(&mut self, path: &str, raw: &[u8], node: &Node) -> Result<()> {
        if let Some(list) = &mut self.json {
            list.push(entry(path, raw, node));
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
            let size = if self.human {
                crate::output::bytes(node.size)
            } else {
                node.size.to_string()
            };
            let mut line = format!(
                "{} {:>8} {:>8} {:>12} {} {path}",
                mode_string(node),
                owner,
                group,
                size,
                crate::output::local_time(node.mtime)
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

    fn list_dir(&mut self, dir: &str, dir_raw: &[u8], nodes: &[Node]) -> Result<()> {
        for node in nodes {
            let path = format!("{}/{}", dir.trim_end_matches('/'), node.name_lossy());
            let mut raw = dir_raw.to_vec();
            if raw.last() != Some(&b'/') {
                raw.push(b'/');
            }
            raw.extend_from_slice(&node.name);
            self.emit(&path, &raw, node)?;
            if self.recursive && node.kind == NodeKind::Dir {
                if let Some(id) = node.subtree {
                    let tree = self.repo.load_tree(&id)?;
                    self.list_dir(&path, &raw, &tree.nodes)?;
                }
            }
        }
        Ok(())
    }
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open_indexed()?;
    let (_, snapshot) = args.filter.find(&repo, &args.snapshot)?;
    let root = repo.load_tree(&snapshot.tree)?;
    let (node, children) = resolve_path(&repo, root.nodes, &args.path)?;
    let mut lister = Lister {
        repo: &repo,
        long: args.long,
        human: args.human_readable,
        recursive: args.recursive,
        json: global.json.then(Vec::new),
        out: std::io::stdout().lock(),
    };
    let shown = args.path.to_string_lossy().into_owned();
    let raw = args.path.as_os_str().as_encoded_bytes();
    match node {
        Some(node) if node.kind != NodeKind::Dir => lister.emit(&shown, raw, &node)?,
        _ => lister.list_dir(&shown, raw, &children)?,
    }
    if let Some(list) = lister.json.take() {
        drop(lister);
        print_json(&list)?;
    }
    Ok(Outcome::Success)
}
