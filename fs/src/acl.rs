//! POSIX ACLs in their extended-attribute form (`system.posix_acl_access`,
//! `system.posix_acl_default`), as the kernel hands them to a FUSE file
//! system and as `mapache snapshot` records them: a little-endian version
//! (2), then one (tag u16, permissions u16, id u32) entry per line.
//!
//! The staging area stores ACLs and keeps them consistent with the mode
//! bits the way Linux does (an access ACL sets the owner, group-class and
//! other bits; a chmod rewrites the matching ACL entries; an ACL that says
//! no more than the mode is not stored at all). Access checks through the
//! mount use the mode bits only — see docs/design.md.

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

/// Whether `name` is one of the two ACL attributes.
pub fn is_acl(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

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
