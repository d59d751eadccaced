//! Comparing two trees byte for byte and field by field.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn entries(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let rel_child = rel.join(&name);
            if fs::symlink_metadata(root.join(&rel_child))
                .unwrap()
                .is_dir()
            {
                stack.push(rel_child.clone());
            }
            out.push(rel_child);
        }
    }
    out.sort();
    out
}

fn content_equal(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = xattr::list(path)
        .map(|names| {
            names
                .filter_map(|n| {
                    xattr::get(path, &n)
                        .ok()
                        .flatten()
                        .map(|v| (n.as_bytes().to_vec(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Asserts that `actual` has exactly the entries of `expected` with the
/// same type, mode, owner, size, mtime (to the nanosecond), content,
/// symlink target, xattrs, device number and hard-link structure.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let want = entries(expected);
    let got = entries(actual);
    assert_eq!(want, got, "the trees hold different entries");
    // Hard links: entries sharing an inode must share one on both sides.
    let mut groups_want: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut groups_got: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for rel in &want {
        let (a, b) = (expected.join(rel), actual.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        let what = rel.display();
        assert_eq!(ma.file_type(), mb.file_type(), "{what}: type");
        assert_eq!(
            ma.mode(),
            mb.mode(),
            "{what}: mode {:o} vs {:o}",
            ma.mode(),
            mb.mode()
        );
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{what}: owner");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{what}: mtime"
        );
        assert_eq!(ma.rdev(), mb.rdev(), "{what}: rdev");
        assert_eq!(xattrs(&a), xattrs(&b), "{what}: xattrs");
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "{what}: link target"
            );
        } else if ma.is_file() {
            assert_eq!(ma.len(), mb.len(), "{what}: size");
            assert!(content_equal(&a, &b), "{what}: content differs");
            if ma.nlink() > 1 {
                groups_want
                    .entry((ma.dev(), ma.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            if mb.nlink() > 1 {
                groups_got
                    .entry((mb.dev(), mb.ino()))
                    .or_default()
                    .push(rel.clone());
            }
        }
    }
    let mut want_links: Vec<_> = groups_want.into_values().collect();
    let mut got_links: Vec<_> = groups_got.into_values().collect();
    want_links.sort();
    got_links.sort();
    assert_eq!(want_links, got_links, "hard links differ");
}
