//! The writable `staging/` folder of a real mount: copy in with normal
//! tools, commit from another shell, crash the mount.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{RenameFlags, AT_FDCWD};

use crate::util::{
    assert_same_tree, make_rich_tree, require_root, sh, write_random_file, Env, MountGuard,
};

#[test]
fn cp_into_staging_and_commit_while_mounted() {
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    sh(&format!("cp -a {} {}/", source.display(), staged.display()));
    // Through the mount, the staged copy is the source, field by field.
    assert_same_tree(&source, &staged.join("source"));

    let before = fs::read_dir(mount.path.join("snapshots")).unwrap().count();
    // Another process commits; the mount does it and shows it at once.
    let commit = env.json(&["commit", "-m", "copied in"]);
    assert_eq!(
        fs::read_dir(mount.path.join("snapshots")).unwrap().count(),
        before + 1
    );
    let short = commit["short_id"].as_str().unwrap();
    assert_same_tree(&source, &mount.path.join("ids").join(short).join("source"));
    // The staging view continues from the new snapshot.
    assert_same_tree(&source, &staged.join("source"));
    // Nothing changed since: the mount writes no snapshot.
    let again = env.json(&["commit", "-m", "again"]);
    assert_eq!(again["committed"], false, "{again}");
    assert_eq!(
        fs::read_dir(mount.path.join("snapshots")).unwrap().count(),
        before + 1
    );

    let restored = env.path("restored");
    env.ok(&["restore", short, "--target", restored.to_str().unwrap()]);
    assert_same_tree(&source, &restored.join("source"));
}

#[test]
fn stage_commands_are_run_by_the_mount_that_holds_staging() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    // Looked at through the mount first, so that the kernel holds entries
    // the commands then change.
    fs::create_dir_all(staged.join("d")).unwrap();
    fs::write(staged.join("d/f"), "first").unwrap();
    fs::hard_link(staged.join("d/f"), staged.join("keep")).unwrap();
    let ino = fs::metadata(staged.join("keep")).unwrap().ino();
    let open = fs::OpenOptions::new()
        .write(true)
        .open(staged.join("d/f"))
        .unwrap();

    // A relative source: the mount has a working folder of its own.
    let added = env
        .command(&["stage", "add", "source", "--to", "/in"])
        .current_dir(env.path(""))
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    assert!(String::from_utf8_lossy(&added.stdout).starts_with("staged "));
    assert_same_tree(&source, &staged.join("in/source"));
    let listed = env.ok(&["stage", "ls", "/in"]);
    assert_eq!(listed.trim(), "/in/source");

    // Removing the folder that holds the first name: the other name keeps
    // the inode number, at once, and the open handle still writes into it.
    env.ok(&["stage", "rm", "-R", "/d"]);
    assert!(
        fs::symlink_metadata(staged.join("d")).is_err(),
        "d is gone at once"
    );
    let kept = fs::metadata(staged.join("keep")).unwrap();
    assert_eq!((kept.ino(), kept.nlink()), (ino, 1));
    open.write_all_at(b"FIRST", 0).unwrap();
    drop(open);
    assert_eq!(fs::read_to_string(staged.join("keep")).unwrap(), "FIRST");

    env.ok(&["stage", "mv", "/keep", "/kept"]);
    assert!(
        fs::symlink_metadata(staged.join("keep")).is_err(),
        "keep moved at once"
    );
    assert_eq!(fs::metadata(staged.join("kept")).unwrap().ino(), ino);
    env.ok(&["stage", "mkdir", "-p", "/m/n"]);
    assert!(staged.join("m/n").is_dir());

    let status = env.ok(&["stage", "status"]);
    for line in ["A /in", "A /kept", "A /m"] {
        assert!(status.lines().any(|l| l == line), "{line} in {status}");
    }
    // A failure is one line with the cause, and the exit code of an error.
    let out = env.run(&["stage", "rm", "/missing"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot remove /missing: no such file or directory"),
        "{err}"
    );

    let commit = env.json(&["commit", "-m", "staged by commands"]);
    let snapshot = mount
        .path
        .join("ids")
        .join(commit["short_id"].as_str().unwrap());
    assert_same_tree(&source, &snapshot.join("in/source"));
    assert_eq!(fs::read_to_string(snapshot.join("kept")).unwrap(), "FIRST");

    // Reset through the mount: staging/ is the new base again, at once.
    fs::write(staged.join("scratch"), "x").unwrap();
    let reset = env.ok(&["stage", "reset"]);
    assert!(
        reset.starts_with("staging area reset to snapshot"),
        "{reset}"
    );
    assert!(fs::symlink_metadata(staged.join("scratch")).is_err());
    assert_eq!(fs::read_to_string(staged.join("kept")).unwrap(), "FIRST");
}

/// Every entry below `root`: what it holds (contents, symlink target), its
/// mode and link count.
fn contents(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type().unwrap();
            let meta = fs::symlink_metadata(&path).unwrap();
            let value = if kind.is_dir() {
                stack.push(path);
                "dir".to_string()
            } else if kind.is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_fifo() {
                "fifo".to_string()
            } else {
                format!("{:x}", md5ish(&fs::read(&path).unwrap()))
            };
            // Symlinks have no mode of their own.
            let mode = if kind.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            out.insert(rel, format!("{value} mode {mode:o} links {}", meta.nlink()));
        }
    }
    out
}

fn md5ish(data: &[u8]) -> u64 {
    // Content fingerprint for the comparison; collisions do not matter here.
    data.iter()
        .fold(data.len() as u64, |h, &b| h.rotate_left(5) ^ b as u64)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_operations_through_the_mount_match_a_plain_folder() {
    let env = Env::with_repo();
    let model = env.path("model");
    fs::create_dir_all(&model).unwrap();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let long = "n".repeat(256);
    let names = ["a", "b", "d1/c", "d1/d2/e", "d3/f", "g", "d1/d2", &long];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..6 {
        for _ in 0..60 {
            let name = names[rng.below(names.len() as u64) as usize];
            let other = names[rng.below(names.len() as u64) as usize];
            let op = rng.below(15);
            let mode = 0o600 + rng.below(0o100) as u32;
            // Apply to both roots; both must agree on the outcome, to the
            // error number.
            let results: Vec<Result<(), Option<i32>>> = [&model, &staged]
                .iter()
                .map(|root| {
                    let (p, q) = (root.join(name), root.join(other));
                    let done = match op {
                        0 => {
                            if let Some(parent) = p.parent() {
                                let _ = fs::create_dir_all(parent);
                            }
                            let data: Vec<u8> =
                                (0..rng_len(name, round)).map(|i| (i % 251) as u8).collect();
                            writer()
                                .create(true)
                                .truncate(true)
                                .open(&p)
                                .and_then(|mut f| f.write_all(&data))
                        }
                        1 => writer()
                            .append(true)
                            .open(&p)
                            .and_then(|mut f| f.write_all(b"appended")),
                        2 => {
                            use std::os::unix::fs::FileExt;
                            writer().open(&p).and_then(|f| f.write_all_at(b"middle", 3))
                        }
                        3 => writer().open(&p).and_then(|f| f.set_len(5)),
                        4 => fs::rename(&p, &q),
                        5 => fs::remove_file(&p),
                        6 => fs::remove_dir(&p),
                        7 => std::os::unix::fs::symlink(other, &p),
                        8 => fs::hard_link(&p, &q),
                        9 => renameat2(&p, &q, RenameFlags::RENAME_NOREPLACE),
                        10 => renameat2(&p, &q, RenameFlags::RENAME_EXCHANGE),
                        11 => {
                            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(mode))
                                .map_err(std::io::Error::from)
                        }
                        12 => fs::create_dir(&p),
                        13 => fs::set_permissions(&p, fs::Permissions::from_mode(mode)),
                        _ => nix::unistd::truncate(&p, 7).map_err(std::io::Error::from),
                    };
                    done.map_err(|e| e.raw_os_error())
                })
                .collect();
            assert_eq!(
                results[0],
                results[1],
                "op {op} on {} {} in round {round}",
                &name[..name.len().min(12)],
                &other[..other.len().min(12)]
            );
        }
        assert_eq!(
            contents(&model),
            contents(&staged),
            "staging view in round {round}"
        );
        assert_eq!(
            link_groups(&model),
            link_groups(&staged),
            "hard links in the staging view in round {round}"
        );
        let commit = env.json(&["commit", "-m", &format!("round {round}")]);
        let committed = mount
            .path
            .join("ids")
            .join(commit["short_id"].as_str().unwrap());
        assert_eq!(
            contents(&model),
            contents(&committed),
            "committed snapshot in round {round}"
        );
    }
}

/// Options to open for writing without waiting for a reader when the name
/// is a fifo (which then fails with ENXIO, on ext4 and in staging alike).
fn writer() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).custom_flags(libc::O_NONBLOCK);
    options
}

fn renameat2(from: &Path, to: &Path, flags: RenameFlags) -> std::io::Result<()> {
    nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, flags).map_err(std::io::Error::from)
}

/// The entries below `root` that share an inode, each group as its names
/// in order (names are what two trees have in common, inode numbers not).
fn link_groups(root: &Path) -> Vec<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            groups.entry(meta.ino()).or_default().push(rel);
        }
    }
    let mut linked: Vec<Vec<String>> = groups
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut names| {
            names.sort();
            names
        })
        .collect();
    linked.sort();
    linked
}

fn rng_len(name: &str, round: u64) -> usize {
    (name.len() * 7919 + round as usize * 104_729) % 300_000
}

#[test]
fn kill_9_of_the_mount_loses_nothing_that_was_fsynced() {
    let env = Env::with_repo();
    let mut mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    let mut synced = Vec::new();
    for i in 0..5 {
        write_random_file(
            &data.join(format!("f{i}")),
            3 * 1024 * 1024 + i * 1000,
            50 + i as u64,
        );
        let name = format!("synced-{i}");
        let content = fs::read(data.join(format!("f{i}"))).unwrap();
        let mut file = fs::File::create(staged.join(&name)).unwrap();
        file.write_all(&content).unwrap();
        file.sync_all().unwrap(); // acknowledged: must survive
        synced.push((name, content));
    }
    // A copy still going on when the mount dies.
    write_random_file(&data.join("big"), 64 * 1024 * 1024, 99);
    let copy = Command::new("cp")
        .arg(data.join("big"))
        .arg(staged.join("in-flight"))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    mount.kill_9();
    let _ = copy.wait_with_output();

    let mount = MountGuard::new(&env, "mnt2");
    for (name, content) in &synced {
        assert_eq!(
            &fs::read(mount.path.join("staging").join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    let commit = env.json(&["commit", "-m", "after crash"]);
    let short = commit["short_id"].as_str().unwrap().to_string();
    drop(mount);
    let restored = env.path("restored");
    env.ok(&["restore", &short, "--target", restored.to_str().unwrap()]);
    for (name, content) in &synced {
        assert_eq!(&fs::read(restored.join(name)).unwrap(), content, "{name}");
    }
}

#[test]
fn full_state_folder_fails_the_write_and_keeps_what_was_staged() {
    if !crate::util::require_root("full_state_folder_fails_the_write_and_keeps_what_was_staged") {
        return;
    }
    let env = Env::with_repo();
    // The state folder (journal, local data) on a small filesystem.
    let state = crate::util::TmpfsMount::new(&env.path("state"), "size=4m");
    let mut mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let mut kept = fs::File::create(staged.join("kept.txt")).unwrap();
    kept.write_all(b"staged before the disk filled").unwrap();
    kept.sync_all().unwrap();
    drop(kept);
    // 16 MiB cannot be staged in 4 MiB: the write fails with ENOSPC.
    let err = fs::write(staged.join("too-big.bin"), vec![7u8; 16 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(
        fs::read_to_string(staged.join("kept.txt")).unwrap(),
        "staged before the disk filled"
    );
    // Crash with the disk still full, make room, and everything staged
    // before is still there.
    mount.kill_9();
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&state.path)
        .status()
        .unwrap();
    assert!(status.success());
    let mount = MountGuard::new(&env, "mnt2");
    assert_eq!(
        fs::read_to_string(mount.path.join("staging/kept.txt")).unwrap(),
        "staged before the disk filled"
    );
    let commit = env.json(&["commit"]);
    drop(mount);
    let restored = env.path("restored");
    env.ok(&[
        "restore",
        commit["id"].as_str().unwrap(),
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(restored.join("kept.txt")).unwrap(),
        "staged before the disk filled"
    );
}

#[test]
fn a_writer_the_mount_never_sees_open_is_committed_with_what_it_wrote() {
    // The kernel opens files without telling the mount (zero-message
    // open): an appender's writes name only the inode, and a commit in
    // between takes what the file holds at that moment.
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 241) as u8).collect();
    fs::write(staged.join("small"), b"first line\n").unwrap();
    fs::write(staged.join("large"), &large).unwrap();
    env.ok(&["commit", "-m", "base"]);
    let append = |name: &str| {
        fs::OpenOptions::new()
            .append(true)
            .open(staged.join(name))
            .unwrap()
    };
    let (mut small, mut big) = (append("small"), append("large"));
    small.write_all(b"second line\n").unwrap();
    big.write_all(b"tail one").unwrap();
    let first = env.json(&["commit", "-m", "mid-write"]);
    small.write_all(b"third line\n").unwrap();
    big.write_all(b"tail two").unwrap();
    big.sync_all().unwrap();
    assert_eq!(
        fs::read(staged.join("small")).unwrap(),
        b"first line\nsecond line\nthird line\n"
    );
    let second = env.json(&["commit", "-m", "after"]);
    drop((small, big, mount));

    for (commit, lines, tail) in [
        (&first, "first line\nsecond line\n", "tail one"),
        (
            &second,
            "first line\nsecond line\nthird line\n",
            "tail onetail two",
        ),
    ] {
        let short = commit["short_id"].as_str().unwrap();
        let restored = env.path(&format!("restored-{short}"));
        env.ok(&["restore", short, "--target", restored.to_str().unwrap()]);
        assert_eq!(fs::read_to_string(restored.join("small")).unwrap(), lines);
        let got = fs::read(restored.join("large")).unwrap();
        assert_eq!(got.len(), large.len() + tail.len(), "{short}");
        assert!(got.starts_with(&large) && got.ends_with(tail.as_bytes()));
    }
}

#[test]
fn a_staged_file_open_when_unlinked_stays_readable() {
    use std::io::{Read, Seek, SeekFrom};
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let small = b"small and inline".to_vec();
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    fs::write(staged.join("committed"), &large).unwrap();
    env.ok(&["commit", "-m", "base"]);
    fs::write(staged.join("small"), &small).unwrap();
    fs::write(staged.join("large"), &large).unwrap();
    for (name, content) in [("small", &small), ("large", &large), ("committed", &large)] {
        let mut file = fs::File::open(staged.join(name)).unwrap();
        fs::remove_file(staged.join(name)).unwrap();
        assert!(!staged.join(name).exists());
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(&read, content, "{name}");
        file.seek(SeekFrom::Start(5)).unwrap();
        let mut again = [0u8; 4];
        file.read_exact(&mut again).unwrap();
        assert_eq!(&again, &content[5..9], "{name}");
    }
}

#[test]
fn writes_through_a_handle_outlive_the_name_it_was_opened_by() {
    use std::io::{Read, Seek, SeekFrom};
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();

    // A temporary file: unlinked at once, then written and read back.
    for content in [b"small".to_vec(), large.clone()] {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(staged.join("scratch"))
            .unwrap();
        fs::remove_file(staged.join("scratch")).unwrap();
        file.write_all(&content).unwrap();
        file.sync_all().unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, content);
    }

    // A hard-linked file: written through a handle on the name that went;
    // the other name gets the bytes, and fsync makes them durable.
    fs::write(staged.join("first"), b"before").unwrap();
    fs::hard_link(staged.join("first"), staged.join("second")).unwrap();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(staged.join("first"))
        .unwrap();
    fs::remove_file(staged.join("first")).unwrap();
    file.write_all(b"after!").unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(fs::read(staged.join("second")).unwrap(), b"after!");
    env.ok(&["commit", "-m", "after"]);
    drop(mount);
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(fs::read(restored.join("second")).unwrap(), b"after!");
    assert!(!restored.join("first").exists() && !restored.join("scratch").exists());
}

#[test]
fn an_unlinked_open_file_can_be_truncated_and_chmodded() {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 239) as u8).collect();
    fs::write(staged.join("base"), &large).unwrap();
    env.ok(&["commit", "-m", "base"]);
    let small = b"0123456789abcdef".to_vec();
    fs::write(staged.join("temp"), &small).unwrap();

    // A file made here and a file of the base, each unlinked while open,
    // as temporary files are: ftruncate, fchmod and fstat work on them.
    for (name, before) in [("temp", &small), ("base", &large)] {
        let path = staged.join(name);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        fs::remove_file(&path).unwrap();
        file.set_len(10).unwrap();
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(
            (meta.len(), meta.mode() & 0o7777, meta.nlink()),
            (10, 0o600, 0),
            "{name}"
        );
        let mut read = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, &before[..10], "{name}");
        // Grown past what staging keeps in memory.
        file.set_len(2 << 20).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        read.clear();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), 2 << 20, "{name}");
        assert!(read[..10] == before[..10] && read[10..].iter().all(|&b| b == 0));
    }
    let after = env.json(&["commit", "-m", "after"]);
    drop(mount);
    let restored = env.path("restored");
    let short = after["short_id"].as_str().unwrap();
    env.ok(&["restore", short, "--target", restored.to_str().unwrap()]);
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 0);
}

#[test]
fn a_base_file_unlinked_while_open_takes_writes_through_its_handle() {
    use std::io::{Read, Seek, SeekFrom};
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("based"), b"from the base").unwrap();
    env.snapshot(&source);
    let mount = MountGuard::with_args(&env, "mnt", &["--base", "latest"]);
    let staged = mount
        .path
        .join("staging")
        .join(source.strip_prefix("/").unwrap());

    // Never changed in staging, opened, unlinked, then written: the handle
    // sees the bytes, fstat works with no link left, no snapshot has it.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(staged.join("based"))
        .unwrap();
    fs::remove_file(staged.join("based")).unwrap();
    file.seek(SeekFrom::End(0)).unwrap();
    file.write_all(b", and more").unwrap();
    file.sync_all().unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut read = Vec::new();
    file.read_to_end(&mut read).unwrap();
    assert_eq!(read, b"from the base, and more");
    let meta = file.metadata().unwrap();
    assert_eq!(meta.len(), 23);
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&meta), 0);
    drop(file);
    env.ok(&["commit", "-m", "without it"]);
    drop(mount);
    let restored = env.restore("latest", &source, "restored");
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 0);
}

#[test]
fn a_hard_link_keeps_its_inode_number_when_the_other_name_goes() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    // Unlink the name the file was first known by, then the other way round.
    for (first, second, gone) in [("a", "b", "a"), ("c", "d", "d")] {
        fs::write(staged.join(first), first).unwrap();
        let before = fs::metadata(staged.join(first)).unwrap().ino();
        fs::hard_link(staged.join(first), staged.join(second)).unwrap();
        assert_eq!(fs::metadata(staged.join(second)).unwrap().ino(), before);
        fs::remove_file(staged.join(gone)).unwrap();
        let kept = if gone == first { second } else { first };
        let meta = fs::metadata(staged.join(kept)).unwrap();
        assert_eq!((meta.ino(), meta.nlink()), (before, 1), "{kept}");
        assert_eq!(fs::read_to_string(staged.join(kept)).unwrap(), first);
        // Still the same file for writes and for a new link.
        fs::write(staged.join(kept), "changed").unwrap();
        fs::hard_link(staged.join(kept), staged.join(format!("{kept}2"))).unwrap();
        assert_eq!(
            fs::metadata(staged.join(format!("{kept}2"))).unwrap().ino(),
            before
        );
    }
    // Replaced by a rename: the other name keeps the number too.
    fs::write(staged.join("e"), "e").unwrap();
    fs::hard_link(staged.join("e"), staged.join("f")).unwrap();
    let before = fs::metadata(staged.join("e")).unwrap().ino();
    fs::write(staged.join("g"), "g").unwrap();
    fs::rename(staged.join("g"), staged.join("e")).unwrap();
    assert_eq!(fs::metadata(staged.join("f")).unwrap().ino(), before);
    assert_ne!(fs::metadata(staged.join("e")).unwrap().ino(), before);
    assert_eq!(fs::read_to_string(staged.join("e")).unwrap(), "g");
}

/// Every entry below `root` with its mode and ACLs, as `getfacl` prints
/// them, in name order.
fn acls(root: &Path) -> String {
    sh(&format!(
        "cd {} && find . -mindepth 1 | sort | xargs getfacl -p && find . -printf '%p %m\\n' | sort",
        root.display()
    ))
}

#[test]
fn acls_in_staging_behave_as_on_a_local_folder() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("shared")).unwrap();
    fs::write(source.join("shared/report.txt"), "numbers").unwrap();
    fs::write(source.join("plain.txt"), "plain").unwrap();
    let s = source.display();
    sh(&format!(
        "setfacl -m u:nobody:rw,g:nogroup:r {s}/shared/report.txt"
    ));
    sh(&format!("setfacl -d -m u:nobody:rwx {s}/shared"));
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging/source");
    let local = env.path("local/source");
    fs::create_dir_all(local.parent().unwrap()).unwrap();
    // `cp -a` keeps the ACLs without a complaint (it exits non-zero when
    // it cannot).
    sh(&format!(
        "cp -a {s} {}/",
        staged.parent().unwrap().display()
    ));
    sh(&format!("cp -a {s} {}/", local.parent().unwrap().display()));

    // The same changes on both sides; ext4 is the reference.
    for dir in [&local, &staged] {
        let d = dir.display();
        // A chmod rewrites the mask of an extended ACL.
        sh(&format!("chmod 640 {d}/shared/report.txt"));
        // An ACL that says no more than the mode is only the mode.
        sh(&format!("setfacl -m u::rwx,g::r-x,o::- {d}/plain.txt"));
        // Extended, then the named entry removed again: the mask stays.
        sh(&format!("setfacl -m u:daemon:r {d}/plain.txt"));
        sh(&format!("setfacl -x u:daemon {d}/plain.txt"));
        // Removing everything leaves the mode.
        sh(&format!("setfacl -b {d}/shared/report.txt"));
        sh(&format!("setfacl -m g:nogroup:rw {d}/shared/report.txt"));
        // New entries in a folder with a default ACL inherit it and ignore
        // the umask; elsewhere the umask applies.
        sh(&format!(
            "cd {d}/shared && umask 077 && touch new.txt && mkdir sub && touch sub/deep && mkfifo pipe"
        ));
        sh(&format!(
            "cd {d} && umask 027 && touch masked.txt && mkdir masked"
        ));
    }
    assert_eq!(acls(&staged), acls(&local));
    // A default ACL belongs to folders only.
    let refused = Command::new("setfacl")
        .args(["-d", "-m", "u:nobody:r"])
        .arg(staged.join("plain.txt"))
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // The snapshot keeps them: a restore shows the same.
    env.ok(&["commit", "-m", "acls"]);
    let restored = env.restore("latest", Path::new("/source"), "restored");
    assert_eq!(acls(&restored), acls(&local));
    // So does the snapshot through the mount.
    assert_eq!(acls(&mount.path.join("latest/source")), acls(&local));
}

#[test]
fn with_other_users_allowed_the_kernel_enforces_acls() {
    if !require_root("with_other_users_allowed_the_kernel_enforces_acls") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("secret"), "recorded").unwrap();
    // Readable by everyone going by the mode (0644), not by nobody.
    sh(&format!(
        "setfacl -m u:nobody:- {}/secret",
        source.display()
    ));
    env.snapshot(&source);
    let mount = MountGuard::with_args(&env, "mnt", &["--allow-other"]);
    fs::set_permissions(
        mount.path.parent().unwrap(),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let staged = mount.path.join("staging/secret");
    fs::write(&staged, "staged").unwrap();
    sh(&format!("setfacl -m u:nobody:- {}", staged.display()));
    let snapshot_file = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap())
        .join("secret");
    let reads_as = |uid: u32, path: &Path| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg("cat")
            .arg(path)
            .output()
            .unwrap()
            .status
            .success()
    };
    for path in [&snapshot_file, &staged] {
        assert!(!reads_as(65534, path), "nobody read {}", path.display());
        assert!(
            reads_as(1, path),
            "daemon could not read {}",
            path.display()
        );
    }
}

#[test]
fn renaming_and_removing_a_folder_leaves_its_look_alike_neighbours_alone() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    // "a.txt" sorts just before "a/…", "a0" just after: the neighbours of
    // everything below "a" in path order.
    fs::create_dir_all(staged.join("a/deeper")).unwrap();
    for name in ["a/x", "a/deeper/y", "a.txt", "a0"] {
        fs::write(staged.join(name), name).unwrap();
    }
    let ino = |name: &str| fs::metadata(staged.join(name)).unwrap().ino();
    let before: Vec<u64> = ["a/x", "a/deeper/y", "a.txt", "a0"].map(ino).to_vec();

    fs::rename(staged.join("a"), staged.join("b")).unwrap();
    let after: Vec<u64> = ["b/x", "b/deeper/y", "a.txt", "a0"].map(ino).to_vec();
    assert_eq!(before, after, "inode numbers follow the rename");
    assert_eq!(fs::read(staged.join("b/deeper/y")).unwrap(), b"a/deeper/y");

    fs::remove_dir_all(staged.join("b")).unwrap();
    assert!(!staged.join("b").exists());
    assert_eq!(ino("a.txt"), before[2]);
    assert_eq!(fs::read(staged.join("a0")).unwrap(), b"a0");
    // A new "a" is a new inode, not a resurrected one.
    fs::create_dir(staged.join("a")).unwrap();
    fs::write(staged.join("a/x"), "new").unwrap();
    assert!(!before.contains(&ino("a/x")));
    assert_eq!(fs::read(staged.join("a/x")).unwrap(), b"new");
}

#[test]
fn names_longer_than_255_bytes_are_refused_as_ext4_refuses_them() {
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let longest = "n".repeat(255);
    let too_long = "n".repeat(256);
    fs::write(staged.join("file"), "x").unwrap();
    let is_too_long = |result: std::io::Result<()>, what: &str| {
        let e = result.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{what}: {e}");
    };
    let long = staged.join(&too_long);
    is_too_long(fs::create_dir(&long), "mkdir");
    is_too_long(fs::write(&long, "x"), "open O_CREAT");
    is_too_long(std::os::unix::fs::symlink("file", &long), "symlink");
    is_too_long(fs::hard_link(staged.join("file"), &long), "link");
    is_too_long(fs::rename(staged.join("file"), &long), "rename");
    is_too_long(
        nix::unistd::mkfifo(&long, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .map_err(std::io::Error::from),
        "mkfifo",
    );
    // Lookups of such names say so too, not ENOENT.
    is_too_long(
        fs::set_permissions(&long, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        "chmod",
    );
    is_too_long(fs::remove_file(&long), "unlink");
    is_too_long(fs::remove_dir(&long), "rmdir");
    is_too_long(fs::metadata(&long).map(|_| ()), "stat");
    // 255 bytes are fine, and `statfs` says 255.
    fs::write(staged.join(&longest), "y").unwrap();
    assert_eq!(fs::read(staged.join(&longest)).unwrap(), b"y");
    let stat = nix::sys::statvfs::statvfs(&staged).unwrap();
    assert_eq!(stat.name_max(), 255);
}

#[test]
fn folder_link_counts_count_subfolders_as_on_ext4() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let (mount, staged, plain) = staging_beside_a_plain_folder(&env);
    for root in [&staged, &plain] {
        for dir in ["top", "top/a", "top/b", "top/c", "top/a/deeper"] {
            fs::create_dir(root.join(dir)).unwrap();
        }
        fs::write(root.join("top/file"), "x").unwrap();
        fs::remove_dir(root.join("top/c")).unwrap();
    }
    let links = |root: &Path| -> Vec<u64> {
        ["top", "top/a", "top/b", "top/a/deeper"]
            .iter()
            .map(|dir| fs::metadata(root.join(dir)).unwrap().nlink())
            .collect()
    };
    assert_eq!(links(&plain), [4, 3, 2, 2], "ext4 itself");
    assert_eq!(links(&staged), links(&plain), "staging/");
    // A snapshot shows the same counts.
    let commit = env.json(&["commit", "-m", "folders"]);
    let snapshot = mount
        .path
        .join("ids")
        .join(commit["short_id"].as_str().unwrap());
    assert_eq!(links(&snapshot), links(&plain), "a snapshot");
}

/// Snapshots tagged `auto`, oldest first.
fn auto_snapshots(env: &Env) -> Vec<serde_json::Value> {
    env.json(&["log", "--tag", "auto"])
        .as_array()
        .unwrap()
        .clone()
}

/// Waits up to `seconds` for `done`.
fn wait_until(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_mount_with_commit_every_backs_up_what_is_written_without_a_commit() {
    let env = Env::with_repo();
    let mount = MountGuard::with_args(&env, "mnt", &["--commit-every", "1s"]);
    let staged = mount.path.join("staging");
    // A writer keeps a file open: nothing is committed half written.
    let mut open = fs::File::create(staged.join("notes.txt")).unwrap();
    open.write_all(b"first line\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(
        auto_snapshots(&env).is_empty(),
        "committed while a file was open"
    );
    open.write_all(b"second line\n").unwrap();
    drop(open);
    fs::create_dir(staged.join("docs")).unwrap();
    fs::write(staged.join("docs/plan.md"), "# plan\n").unwrap();
    // Quiet now: a snapshot appears without anyone running commit.
    assert!(
        wait_until(20, || auto_snapshots(&env).len() == 1),
        "no automatic snapshot: {}",
        mount.log()
    );
    let snapshot = &auto_snapshots(&env)[0];
    let id = snapshot["short_id"].as_str().unwrap();
    let restored = env.path("restored");
    env.ok(&["restore", id, "--target", restored.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(restored.join("notes.txt")).unwrap(),
        "first line\nsecond line\n"
    );
    assert_eq!(
        fs::read_to_string(restored.join("docs/plan.md")).unwrap(),
        "# plan\n"
    );
    assert!(
        mount
            .log()
            .contains(&format!("automatic commit: snapshot {id} (3 added")),
        "{}",
        mount.log()
    );
    // Nothing changes: no more snapshots.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(auto_snapshots(&env).len(), 1);
    // One more change, one more snapshot, on top of the last.
    fs::write(staged.join("docs/plan.md"), "# plan\n- more\n").unwrap();
    assert!(
        wait_until(20, || auto_snapshots(&env).len() == 2),
        "{}",
        mount.log()
    );
    let files = env.ok(&["ls", "latest", "/", "-R"]);
    assert!(
        files.contains("/notes.txt") && files.contains("/docs/plan.md"),
        "{files}"
    );
}

#[test]
fn a_mount_with_commit_on_unmount_commits_what_it_holds_when_stopped() {
    let env = Env::with_repo();
    let mut mount = MountGuard::with_args(&env, "mnt", &["--commit-on-unmount"]);
    fs::write(mount.path.join("staging/kept.txt"), "kept").unwrap();
    assert_eq!(mount.stop(), Some(0));
    let snapshots = auto_snapshots(&env);
    assert_eq!(snapshots.len(), 1, "{}", mount.log());
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(restored.join("kept.txt")).unwrap(),
        "kept"
    );
    // Unmounted again with nothing new: no second snapshot.
    let mut again = MountGuard::with_args(&env, "mnt", &["--commit-on-unmount"]);
    assert_eq!(again.stop(), Some(0));
    assert_eq!(auto_snapshots(&env).len(), 1);
}

#[test]
fn latest_is_the_new_snapshot_as_soon_as_commit_returns() {
    let env = Env::with_repo();
    let mount = MountGuard::new(&env, "mnt");
    let staged = mount.path.join("staging");
    let latest = mount.path.join("latest");
    for round in 0..5 {
        let name = format!("round-{round}.txt");
        fs::write(staged.join(&name), "x").unwrap();
        // The kernel holds the old `latest` (looked up just now).
        let before = fs::read_link(&latest).ok();
        env.ok(&["commit", "-m", &name]);
        assert_ne!(fs::read_link(&latest).ok(), before, "round {round}");
        assert!(latest.join(&name).exists(), "round {round}");
    }
}

#[test]
fn a_second_mount_of_the_same_repository_shows_the_snapshots() {
    let env = Env::with_repo();
    let first = MountGuard::new(&env, "first");
    let second = MountGuard::new(&env, "second");
    assert!(first.path.join("staging").is_dir());
    assert!(!second.path.join("staging").exists());
    assert!(
        second.log().contains("staging/ is left out"),
        "{}",
        second.log()
    );
    assert!(second.log().contains("in use by"), "{}", second.log());
    // A commit reaches the mount that holds the staging area, and both
    // show the new snapshot.
    fs::write(first.path.join("staging/shared.txt"), "both").unwrap();
    let commit = env.json(&["commit", "-m", "from the first"]);
    let short = commit["short_id"].as_str().unwrap();
    for mount in [&first, &second] {
        let file = mount.path.join("ids").join(short).join("shared.txt");
        assert!(
            wait_until(5, || file.exists()),
            "{} does not show {short}",
            mount.path.display()
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "both");
    }
    // Asking the second to commit by itself needs the staging area.
    let third = env.path("third");
    fs::create_dir_all(&third).unwrap();
    let out = env.run(&["mount", third.to_str().unwrap(), "--commit-on-unmount"]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stage_commands_work_right_after_umount_returns() {
    let env = Env::with_repo();
    for round in 0..3 {
        let mount = MountGuard::new(&env, "mnt");
        let name = format!("file-{round}");
        fs::write(mount.path.join("staging").join(&name), "x").unwrap();
        let status = Command::new("umount").arg(&mount.path).status().unwrap();
        assert!(status.success());
        // The mount is still saving the staging area: the command waits
        // for it instead of failing.
        let out = env.run(&["stage", "status"]);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("A /{name}")),
            "round {round}"
        );
        drop(mount);
    }
}

#[test]
fn renaming_over_one_name_of_a_linked_file_counts_one_link_less_as_on_ext4() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let (_mount, staged, plain) = staging_beside_a_plain_folder(&env);
    for root in [&staged, &plain] {
        fs::write(root.join("a"), "a").unwrap();
        fs::hard_link(root.join("a"), root.join("b")).unwrap();
        fs::write(root.join("c"), "c").unwrap();
        assert_eq!(fs::metadata(root.join("a")).unwrap().nlink(), 2);
        let before = fs::metadata(root.join("a")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::rename(root.join("c"), root.join("b")).unwrap();
        let after = fs::metadata(root.join("a")).unwrap();
        assert_eq!(after.nlink(), 1, "{}", root.display());
        assert!(
            (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
            "{}: ctime unchanged",
            root.display()
        );
        assert_eq!(fs::read_to_string(root.join("b")).unwrap(), "c");
    }
}

/// A mount of `env`'s repository, its staging/ folder, and a plain folder
/// on the local file system to do the same steps in.
fn staging_beside_a_plain_folder(
    env: &Env,
) -> (MountGuard, std::path::PathBuf, std::path::PathBuf) {
    let mount = MountGuard::new(env, "mnt");
    let staged = mount.path.join("staging");
    let plain = env.path("plain");
    fs::create_dir_all(&plain).unwrap();
    (mount, staged, plain)
}

/// A new name for `from` itself, a symlink too (`linkat` without
/// `AT_SYMLINK_FOLLOW`).
fn link_itself(from: &Path, to: &Path) {
    nix::unistd::linkat(AT_FDCWD, from, AT_FDCWD, to, nix::fcntl::AtFlags::empty()).unwrap();
}

/// What `stat` says of each name in `names` below `root`, with inode
/// numbers replaced by the first name that has them.
fn link_view(root: &Path, names: &[&str]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let stats: Vec<_> = names
        .iter()
        .map(|name| fs::symlink_metadata(root.join(name)).ok())
        .collect();
    names
        .iter()
        .zip(&stats)
        .map(|(name, meta)| match meta {
            None => format!("{name}: gone"),
            Some(meta) => {
                let same = names
                    .iter()
                    .zip(&stats)
                    .find(|(_, m)| m.as_ref().is_some_and(|m| m.ino() == meta.ino()))
                    .map(|(first, _)| *first)
                    .unwrap();
                let mode = if meta.file_type().is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                };
                format!(
                    "{name}: inode of {same}, links {}, mode {mode:o}",
                    meta.nlink()
                )
            }
        })
        .collect()
}

#[test]
fn hard_links_to_fifos_sockets_devices_and_symlinks_are_one_inode_as_on_ext4() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::MetadataExt;
    // Device nodes need root.
    if !require_root("hard_links_to_fifos_sockets_devices_and_symlinks") {
        return;
    }
    let env = Env::with_repo();
    let (mount, staged, plain) = staging_beside_a_plain_folder(&env);
    let kinds = ["fifo", "socket", "device", "symlink"];
    let mut views = Vec::new();
    for root in [&plain, &staged] {
        let mode = Mode::from_bits_truncate(0o640);
        nix::unistd::mkfifo(&root.join("fifo"), mode).unwrap();
        mknod(&root.join("socket"), SFlag::S_IFSOCK, mode, 0).unwrap();
        mknod(&root.join("device"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
        std::os::unix::fs::symlink("fifo", root.join("symlink")).unwrap();
        let mut names = Vec::new();
        for kind in kinds {
            let (first, second, third) = (kind.to_string(), format!("{kind}2"), format!("{kind}3"));
            let before = fs::symlink_metadata(root.join(&first)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            link_itself(&root.join(&first), &root.join(&second));
            let after = fs::symlink_metadata(root.join(&first)).unwrap();
            assert!(
                (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
                "{}: the ctime of {kind} did not move with a new link",
                root.display()
            );
            link_itself(&root.join(&second), &root.join(&third));
            if kind != "symlink" {
                fs::set_permissions(root.join(&second), fs::Permissions::from_mode(0o604)).unwrap();
            }
            fs::remove_file(root.join(&first)).unwrap();
            names.extend([first, second, third]);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        views.push(link_view(root, &names));
    }
    assert_eq!(views[1], views[0], "staging/ against ext4");
    // The commit keeps them linked: the snapshot shows the same.
    let commit = env.json(&["commit", "-m", "links"]);
    let snapshot = mount
        .path
        .join("ids")
        .join(commit["short_id"].as_str().unwrap());
    let names: Vec<String> = kinds
        .iter()
        .flat_map(|k| [k.to_string(), format!("{k}2"), format!("{k}3")])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let links = |view: Vec<String>| -> Vec<String> {
        // Inode numbers in a snapshot are the mount's own: compare counts
        // and modes only.
        view.into_iter()
            .map(|line| {
                line.split_once(", ").map_or(line.clone(), |(n, rest)| {
                    format!("{}: {rest}", n.split(':').next().unwrap())
                })
            })
            .collect()
    };
    assert_eq!(
        links(link_view(&snapshot, &names)),
        links(views[0].clone()),
        "snapshot"
    );
}
