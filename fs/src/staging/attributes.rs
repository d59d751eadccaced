//! Mode, owner, times and extended attributes of staged entries, with
//! POSIX ACLs kept consistent with the mode as Linux keeps them.

use mapache_store::tree::NodeKind;

use super::journal::Op;
use super::overlay::apply_meta;
use super::overlay::Entry;
use super::{Inner, Meta, Staging};
use crate::acl::{self, Acl};
use crate::error::{FsError, FsResult};

impl Staging {
    /// Sets owner, mode and times of `entry`. An access ACL follows the new
    /// mode (its owner, group-class and other entries), as a chmod on Linux
    /// does. A file whose names are gone (unlinked while open) changes
    /// without a journal record: only `fstat` through a handle sees it, and
    /// no commit or restart ever will. Refused, as its writes are, for a
    /// base hard link whose other names may sit in folders not loaded yet.
    pub fn set_meta(&self, entry: &Entry, meta: Meta) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let Some(path) = entry.path() else {
            let mut f = entry.file().map_err(|_| FsError::NotFound)?.lock();
            if f.fid == 0 && f.node.links > 1 {
                return Err(FsError::NotFound);
            }
            apply_meta(&mut f.node, &meta);
            return Ok(());
        };
        let node = entry.node();
        let acl = node
            .xattrs
            .iter()
            .find(|(name, _)| name == acl::ACCESS)
            .and_then(|(_, value)| Acl::parse(value).ok())
            .filter(|_| (node.mode ^ meta.mode) & 0o777 != 0)
            .map(|acl| acl.with_mode(meta.mode).encode());
        self.record(
            &mut inner,
            Op::SetMeta {
                path: path.clone(),
                meta,
            },
        )?;
        if let Some(value) = acl {
            self.record(
                &mut inner,
                Op::Xattr {
                    path,
                    name: acl::ACCESS.to_vec(),
                    value: Some(value),
                },
            )?;
        }
        Ok(())
    }

    /// Sets an access ACL as Linux does: the mode takes its owner,
    /// group-class and other bits, and an ACL that says no more than the
    /// mode is not kept.
    fn set_access_acl(
        &self,
        inner: &mut Inner,
        entry: &Entry,
        path: &[u8],
        value: &[u8],
    ) -> FsResult<()> {
        let acl = Acl::parse(value)?;
        let node = entry.node();
        let meta = Meta {
            mode: (node.mode & 0o7000) | acl.mode_bits(),
            ..Meta::of_node(&node)
        };
        let had_acl = node.xattrs.iter().any(|(name, _)| name == acl::ACCESS);
        self.record(
            inner,
            Op::SetMeta {
                path: path.to_vec(),
                meta,
            },
        )?;
        let value = match acl.is_minimal() {
            true if !had_acl => return Ok(()),
            true => None,
            false => Some(acl.encode()),
        };
        self.record(
            inner,
            Op::Xattr {
                path: path.to_vec(),
                name: acl::ACCESS.to_vec(),
                value,
            },
        )
    }

    /// Sets (`Some`) or removes an extended attribute of `entry`, which
    /// must have a name. POSIX ACLs are checked, and set the mode as on
    /// Linux (see [`crate::acl`]).
    pub fn set_xattr(&self, entry: &Entry, name: &[u8], value: Option<Vec<u8>>) -> FsResult<()> {
        let mut inner = self.inner.lock();
        let path = entry.path().ok_or(FsError::NotFound)?;
        match (name, &value) {
            (acl::ACCESS, Some(value)) => {
                return self.set_access_acl(&mut inner, entry, &path, value)
            }
            (acl::DEFAULT, Some(value)) => {
                if entry.kind() != NodeKind::Dir {
                    return Err(FsError::AccessDenied);
                }
                Acl::parse(value)?;
            }
            _ => {}
        }
        let has_it = entry.change_node(|node| node.xattrs.iter().any(|(n, _)| n == name));
        if value.is_none() && !has_it {
            return Err(FsError::NoAttribute);
        }
        self.record(
            &mut inner,
            Op::Xattr {
                path,
                name: name.to_vec(),
                value,
            },
        )
    }
}
