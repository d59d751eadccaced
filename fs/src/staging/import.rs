//! Copying local trees into the staging area (`stage add`), keeping
//! metadata, extended attributes and the hard links inside what is copied.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mapache_store::tree::{Node, NodeKind};
use mapache_store::{node_from_metadata, OwnerNames};
use serde::{Deserialize, Serialize};

use super::overlay::{components, join};
use super::{meta_now, Entry, Meta, Staging};
use crate::error::{FsError, FsResult};

/// What `stage add` copied.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Added {
    /// Regular files copied (further names of hard links not counted).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sources that could not be read, one line each; the rest was copied.
    pub warnings: Vec<String>,
}

impl Staging {
    /// Copies each of `sources` (absolute paths: a mount serving another
    /// process's request has its own working folder) into folder `to`,
    /// made with its parents if missing, under the source's own name;
    /// entries already there are replaced.
    pub fn add_trees(&self, sources: &[PathBuf], to: &[u8]) -> FsResult<Added> {
        self.make_folders(to)?;
        let mut adder = Adder {
            staging: self,
            owners: OwnerNames::default(),
            links: HashMap::new(),
            added: Added::default(),
        };
        for source in sources {
            let name = source.file_name().ok_or(FsError::Invalid)?;
            adder.add(source, &join(to, name.as_bytes()))?;
        }
        self.checkpoint()?;
        Ok(adder.added)
    }

    /// Makes folder `path` and its missing parents (`mkdir -p`).
    pub fn make_folders(&self, path: &[u8]) -> FsResult<()> {
        let mut built = Vec::new();
        for part in components(path) {
            built = join(&built, part);
            match self.resolve(&built).map(|entry| entry.kind()) {
                Ok(NodeKind::Dir) => {}
                Ok(_) => return Err(FsError::NotDir),
                Err(FsError::NotFound) => self.mkdir(&built, meta_now(0o755))?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One `stage add`: the hard links seen so far, and what was copied.
struct Adder<'a> {
    staging: &'a Staging,
    owners: OwnerNames,
    /// Staging paths of the files copied that have more links, by the
    /// source's device and inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    added: Added,
}

impl Adder<'_> {
    fn add(&mut self, source: &Path, dest: &[u8]) -> FsResult<()> {
        let meta = match std::fs::symlink_metadata(source) {
            Ok(meta) => meta,
            Err(e) => return self.warn(source, e),
        };
        let name = dest.rsplit(|&b| b == b'/').next().unwrap_or(dest);
        let node = node_from_metadata(source, name, &meta, &self.owners)?;
        let existing = self.staging.resolve(dest).ok().map(|entry| entry.kind());
        match node.kind {
            NodeKind::Dir => {
                match existing {
                    Some(NodeKind::Dir) => {}
                    Some(_) => {
                        self.staging.remove(dest, true)?;
                        self.staging.mkdir(dest, Meta::of_node(&node))?;
                    }
                    None => self.staging.mkdir(dest, Meta::of_node(&node))?,
                }
                let mut children: Vec<_> = match std::fs::read_dir(source) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .collect(),
                    Err(e) => {
                        self.warn(source, e)?;
                        Vec::new()
                    }
                };
                children.sort();
                for child in children {
                    self.add(&source.join(&child), &join(dest, child.as_bytes()))?;
                }
                let folder = self.staging.resolve(dest)?;
                self.set_xattrs(&folder, &node)?;
                // Adding entries changed the folder's times: put them back.
                self.staging.set_meta(&folder, Meta::of_node(&node))?;
            }
            NodeKind::File => {
                if existing.is_some() {
                    self.staging.remove(dest, true)?;
                }
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        return self.staging.link(first, dest);
                    }
                }
                let file = match std::fs::File::open(source) {
                    Ok(file) => file,
                    Err(e) => return self.warn(source, e),
                };
                self.added.bytes +=
                    self.staging
                        .import(dest, file, Meta::of_node(&node), node.xattrs.clone())?;
                self.added.files += 1;
                if meta.nlink() > 1 {
                    self.links.insert(key, dest.to_vec());
                }
            }
            _ => {
                if existing.is_some() {
                    self.staging.remove(dest, true)?;
                }
                self.staging.make_special(dest, node)?;
            }
        }
        Ok(())
    }

    /// Notes a source that cannot be read; the copy goes on without it.
    fn warn(&mut self, source: &Path, error: std::io::Error) -> FsResult<()> {
        self.added
            .warnings
            .push(format!("{}: {error}", source.display()));
        Ok(())
    }

    fn set_xattrs(&self, entry: &Entry, node: &Node) -> FsResult<()> {
        for (name, value) in &node.xattrs {
            self.staging.set_xattr(entry, name, Some(value.clone()))?;
        }
        Ok(())
    }
}
