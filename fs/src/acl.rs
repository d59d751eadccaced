//! POSIX ACLs in their extended-attribute form (`system.posix_acl_access`,
//! `system.posix_acl_default`), as the kernel hands them to a FUSE file
//! system and as `mapache snapshot` records them: a little-endian version
//! (2), then one record (tag u16, permissions u16, id u32) per entry.
//!
//! The staging area stores ACLs and keeps them consistent with the mode
//! bits the way Linux does (an access ACL sets the owner, group-class and
//! other bits; a chmod rewrites the matching ACL entries; an ACL that says
//! no more than the mode is not stored at all). The kernel checks access
//! against them only on mounts other users may enter — see docs/design.md.

use crate::error::{FsError, FsResult};

/// The access ACL's attribute name.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name (folders only).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// Parses the attribute form; anything malformed is EINVAL.
    pub fn parse(value: &[u8]) -> FsResult<Acl> {
        let (header, body) = value.split_at_checked(4).ok_or(FsError::Invalid)?;
        if u32::from_le_bytes(header.try_into().expect("4 bytes")) != VERSION || body.len() % 8 != 0
        {
            return Err(FsError::Invalid);
        }
        let entries: Vec<AclEntry> = body
            .chunks_exact(8)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |tag| entries.iter().filter(|e| e.tag == tag).count();
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        let named = count(USER) + count(GROUP);
        if entries
            .iter()
            .any(|e| !known.contains(&e.tag) || e.perm > 7)
            || count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (named > 0 && count(MASK) != 1)
        {
            return Err(FsError::Invalid);
        }
        Ok(Acl { entries })
    }

    /// The attribute form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| u32::from(e.perm))
    }

    /// The permission bits (0o777) this ACL gives the mode: owner, the
    /// group class (the mask if there is one, else the owning group) and
    /// others.
    pub fn mode_bits(&self) -> u32 {
        let group = self.perm(MASK).or(self.perm(GROUP_OBJ)).unwrap_or(0);
        (self.perm(USER_OBJ).unwrap_or(0) << 6) | (group << 3) | self.perm(OTHER).unwrap_or(0)
    }

    /// Whether the mode bits say all this ACL says (no named users or
    /// groups, no mask): Linux then keeps no ACL, only the mode.
    pub fn is_minimal(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// This ACL after a chmod to `mode`: the owner, group-class and other
    /// entries take the new bits; named entries stay.
    pub fn with_mode(&self, mode: u32) -> Acl {
        let has_mask = self.perm(MASK).is_some();
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let perm = match e.tag {
                    USER_OBJ => Some(mode >> 6),
                    MASK => Some(mode >> 3),
                    GROUP_OBJ if !has_mask => Some(mode >> 3),
                    OTHER => Some(mode),
                    _ => None,
                };
                AclEntry {
                    perm: perm.map_or(e.perm, |p| (p & 7) as u16),
                    ..*e
                }
            })
            .collect();
        Acl { entries }
    }
}

/// ACL attributes to set, by name.
pub type AclAttrs = Vec<(&'static [u8], Vec<u8>)>;

/// What a new entry gets from its folder.
#[derive(Debug, PartialEq, Eq)]
pub struct Inherited {
    /// Its mode (permission bits and setuid, setgid, sticky).
    pub mode: u32,
    /// ACL attributes to set on it.
    pub acls: AclAttrs,
}

/// What a new entry created with `mode` gets in a folder with default ACL
/// `folder_default`, as Linux's `posix_acl_create` decides: with a default
/// ACL the umask is not applied; the entry's access ACL is the default one
/// with its owner, group-class and other entries cut down to `mode`, whose
/// bits in turn become theirs (kept only if it says more than the mode); a
/// new folder also takes the default ACL itself. Without one (or with an
/// unreadable one), the mode loses the umask's bits.
pub fn inherit(folder_default: Option<&[u8]>, mode: u32, umask: u32, is_dir: bool) -> Inherited {
    let Some((value, default)) =
        folder_default.and_then(|value| Some((value, Acl::parse(value).ok()?)))
    else {
        return Inherited {
            mode: mode & !umask & 0o7777,
            acls: Vec::new(),
        };
    };
    let mut access = default.clone();
    let group_class = if default.perm(MASK).is_some() {
        MASK
    } else {
        GROUP_OBJ
    };
    let mut bits = mode & 0o777;
    for entry in &mut access.entries {
        let shift = match entry.tag {
            USER_OBJ => 6,
            OTHER => 0,
            tag if tag == group_class => 3,
            _ => continue,
        };
        entry.perm &= ((bits >> shift) & 7) as u16;
        bits = (bits & !(7 << shift)) | (u32::from(entry.perm) << shift);
    }
    let mut acls = Vec::new();
    if !access.is_minimal() {
        acls.push((ACCESS, access.encode()));
    }
    if is_dir {
        acls.push((DEFAULT, value.to_vec()));
    }
    Inherited {
        mode: (mode & 0o7000) | bits,
        acls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
                .collect(),
        }
        .encode()
    }

    #[test]
    fn minimal_acls_are_the_mode() {
        let minimal =
            Acl::parse(&acl(&[(USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0), (OTHER, 0, 0)])).unwrap();
        assert!(minimal.is_minimal());
        assert_eq!(minimal.mode_bits(), 0o640);
    }

    #[test]
    fn the_mask_is_the_group_class_and_chmod_rewrites_it() {
        let value = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 6, 65534),
            (GROUP_OBJ, 5, 0),
            (MASK, 6, 0),
            (OTHER, 0, 0),
        ]);
        let full = Acl::parse(&value).unwrap();
        assert_eq!(full.encode(), value);
        assert!(!full.is_minimal());
        assert_eq!(full.mode_bits(), 0o760);
        let changed = full.with_mode(0o704);
        assert_eq!(changed.mode_bits(), 0o704);
        // The named user and the owning group keep their entries.
        assert_eq!(changed.perm(USER), Some(6));
        assert_eq!(changed.perm(GROUP_OBJ), Some(5));
    }

    #[test]
    fn new_entries_take_the_folder_default_acl_cut_down_to_their_mode() {
        let default = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 65534),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        // A file created 0666 under umask 077: the umask is ignored, the
        // entries are cut down to rw-, and the mode follows them.
        let file = inherit(Some(&default), 0o666, 0o077, false);
        assert_eq!(file.mode, 0o664);
        let access = Acl::parse(&file.acls[0].1).unwrap();
        assert_eq!(file.acls[0].0, ACCESS);
        assert_eq!(access.perm(MASK), Some(6));
        assert_eq!(access.perm(USER), Some(7), "named entries stay");
        assert_eq!(file.acls.len(), 1);
        // A folder also keeps the default ACL for its own children.
        let dir = inherit(Some(&default), 0o777, 0o022, true);
        assert_eq!(dir.mode, 0o775);
        assert_eq!(dir.acls[1], (DEFAULT, default.clone()));
        // No default ACL: the umask applies, nothing is added.
        let plain = inherit(None, 0o666, 0o022, false);
        assert_eq!(
            plain,
            Inherited {
                mode: 0o644,
                acls: Vec::new()
            }
        );
    }

    #[test]
    fn malformed_acls_are_refused() {
        for bad in [
            vec![],
            vec![2, 0, 0],
            acl(&[(USER_OBJ, 7, 0)]),
            acl(&[
                (USER_OBJ, 7, 0),
                (USER, 6, 1),
                (GROUP_OBJ, 5, 0),
                (OTHER, 0, 0),
            ]),
            acl(&[(USER_OBJ, 9, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]),
        ] {
            assert!(matches!(Acl::parse(&bad), Err(FsError::Invalid)), "{bad:?}");
        }
    }
}
