//! Generated directory trees with every kind of entry and metadata the
//! format must carry.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Deterministic pseudo-random bytes (incompressible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*: fast and good enough to defeat compression.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    fs::write(path, random_bytes(len, seed)).unwrap();
}

fn set_times(path: &Path, secs: i64, nanos: i64) {
    let t = TimeSpec::new(secs, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Builds a tree under `root` with: a multi-chunk file (> 8 MiB), empty
/// files, a sparse run of zeros, compressible text, symlinks (also
/// dangling), hard links, a fifo, unicode and non-UTF-8 names, xattrs, odd
/// permissions, pre-1970 and nanosecond times, nested folders, and (as
/// root) a device node and files owned by other users.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("deep/er/est")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write_random_file(&root.join("big.bin"), 20 * 1024 * 1024 + 12345, 1);
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("deep/er/est/empty-too"), b"").unwrap();
    let text: String = (0..40_000)
        .map(|i| format!("line {i} of compressible text\n"))
        .collect();
    fs::write(root.join("deep/text.txt"), &text).unwrap();
    // Runs of zeros, with data at both ends: a sparse file.
    {
        let file = fs::File::create(root.join("sparse.img")).unwrap();
        file.set_len(24 * 1024 * 1024).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(b"tail", 24 * 1024 * 1024 - 4).unwrap();
    }
    fs::write(root.join("zeros.bin"), vec![0u8; 3 * 1024 * 1024]).unwrap();
    for i in 0..30 {
        fs::write(
            root.join(format!("deep/er/small-{i}.txt")),
            format!("small file {i}\n"),
        )
        .unwrap();
    }
    symlink("deep/text.txt", root.join("link-to-text")).unwrap();
    symlink("/nonexistent/target", root.join("dangling-link")).unwrap();
    symlink("er", root.join("deep/link-to-dir")).unwrap();
    fs::hard_link(root.join("deep/text.txt"), root.join("hard-link-to-text")).unwrap();
    fs::hard_link(
        root.join("deep/text.txt"),
        root.join("deep/er/second-hard-link"),
    )
    .unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    fs::write(root.join("héllo wörld ✓.txt"), "unicode name\n").unwrap();
    fs::write(root.join("日本語"), "unicode name 2\n").unwrap();
    let raw_name = OsStr::from_bytes(b"latin1-\xe9t\xe9-\xff");
    fs::write(root.join(raw_name), "non-UTF-8 name\n").unwrap();
    fs::write(root.join("with\nnewline"), "a newline in the name\n").unwrap();
    xattr::set(
        root.join("deep/text.txt"),
        "user.mapache.test",
        b"value \x00 with nul",
    )
    .unwrap();
    xattr::set(root.join("deep"), "user.folder", b"on a folder").unwrap();
    // Odd permissions.
    fs::write(root.join("setuid-exec"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid-exec"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::write(root.join("no-perms"), "mode 000\n").unwrap();
    fs::set_permissions(root.join("no-perms"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    if super::is_root() {
        let dev = nix::sys::stat::makedev(1, 3);
        nix::sys::stat::mknod(
            &root.join("null-device"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            dev,
        )
        .unwrap();
        fs::write(root.join("owned-by-nobody"), "chown\n").unwrap();
        std::os::unix::fs::lchown(root.join("owned-by-nobody"), Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::lchown(root.join("dangling-link"), Some(1234), Some(4321)).unwrap();
    }
    // Times: before 1970, with nanoseconds, on files, links and folders.
    set_times(&root.join("empty"), -1_234_567_890, 123_456_789);
    set_times(&root.join("link-to-text"), -86_400, 999_999_999);
    set_times(&root.join("big.bin"), 1_700_000_000, 1);
    set_times(&root.join("deep/er/est"), 0, 500);
    set_times(&root.join("empty-dir"), -1, 0);
}
