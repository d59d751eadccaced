//! The repository mounted with FUSE: browsing snapshots with normal tools.
//! These tests really mount; CI runs them as root with /dev/fuse.

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::{
    assert_same_tree, make_rich_tree, require_root, resident_pages, sh, write_random_file, Env,
    MountGuard,
};

#[test]
fn mounted_snapshot_matches_its_restore() {
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);
    let report = env.json(&["snapshot", source.to_str().unwrap(), "--tag", "nightly"]);
    let short = report["short_id"].as_str().unwrap();
    let restored = env.restore("latest", &source, "restored");
    let mount = MountGuard::new(&env, "mnt");
    let inside = |root: &str| {
        mount
            .path
            .join(root)
            .join(source.strip_prefix("/").unwrap())
    };

    // Field by field, byte for byte, hard links as shared inode numbers.
    assert_same_tree(&restored, &inside("latest"));
    assert_same_tree(&restored, &inside(&format!("ids/{short}")));
    let tag_dir = mount.path.join("tags/nightly");
    assert_eq!(fs::read_dir(&tag_dir).unwrap().count(), 1);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        fs::read_dir(mount.path.join("hosts").join(host))
            .unwrap()
            .count(),
        1
    );

    // Normal tools agree with the restored tree.
    let (m, r) = (inside("latest"), restored.clone());
    let (m, r) = (m.to_str().unwrap(), r.to_str().unwrap());
    // diff calls any two fifos or devices different; tar below covers them.
    sh(&format!(
        "diff -r --no-dereference --exclude=fifo --exclude=null-device {r} {m}"
    ));
    assert_eq!(
        sh(&format!("cd {r} && find . | sort")),
        sh(&format!("cd {m} && find . | sort"))
    );
    assert_eq!(
        sh(&format!("cd {r} && grep -r -c 'compressible' . | sort")),
        sh(&format!("cd {m} && grep -r -c 'compressible' . | sort"))
    );
    assert_eq!(
        sh(&format!(
            "cd {r} && tar cf - --sort=name --numeric-owner . | md5sum"
        )),
        sh(&format!(
            "cd {m} && tar cf - --sort=name --numeric-owner . | md5sum"
        ))
    );
    let copy = env.path("copied");
    sh(&format!("cp -a {m} {}", copy.display()));
    assert_same_tree(&restored, &copy);
}

#[test]
fn random_reads_in_the_middle_of_a_large_file() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("big.bin"), 40 * 1024 * 1024, 8);
    env.snapshot(&source);
    let original = fs::read(source.join("big.bin")).unwrap();
    let mount = MountGuard::new(&env, "mnt");
    let file = fs::File::open(
        mount
            .path
            .join("latest")
            .join(source.strip_prefix("/").unwrap())
            .join("big.bin"),
    )
    .unwrap();
    use std::os::unix::fs::FileExt;
    for (offset, len) in [
        (0u64, 10usize),
        (33_000_000, 100_000),
        (1_048_573, 7),
        (40 * 1024 * 1024 - 5, 5),
        (20_000_000, 3_000_000),
    ] {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).unwrap();
        assert_eq!(
            buf,
            original[offset as usize..offset as usize + len],
            "at {offset}"
        );
    }
}

#[test]
fn reading_a_small_file_puts_the_next_ones_in_the_page_cache() {
    let env = Env::with_repo();
    let source = env.path("source");
    for folder in ["read", "listed"] {
        fs::create_dir_all(source.join(folder)).unwrap();
        for i in 0..20 {
            let name = source.join(folder).join(format!("file-{i:02}"));
            write_random_file(&name, 20_000 + i * 1000, i as u64);
        }
    }
    write_random_file(&source.join("read/large"), 1 << 20, 99);
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    let inside = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap());

    // Listing alone pushes nothing (mincore opens only the file it asks
    // about, without reading it; a read pushes the files after it).
    assert_eq!(fs::read_dir(inside.join("listed")).unwrap().count(), 20);
    assert_eq!(resident_pages(&inside.join("listed/file-05")), 0);

    // Reading the first file of a folder pushes the small ones after it,
    // whole, without anyone reading them; large files are left to reads.
    assert_eq!(fs::read_dir(inside.join("read")).unwrap().count(), 21);
    fs::read(inside.join("read/file-00")).unwrap();
    let last = inside.join("read/file-19");
    let pages = (20_000 + 19 * 1000_usize).div_ceil(4096);
    let deadline = Instant::now() + Duration::from_secs(10);
    while resident_pages(&last) < pages && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(resident_pages(&last), pages, "file-19 was not pushed");
    assert_eq!(resident_pages(&inside.join("read/large")), 0);
    // What was pushed is the file's content.
    for i in 0..20 {
        let name = format!("read/file-{i:02}");
        assert_eq!(
            fs::read(inside.join(&name)).unwrap(),
            fs::read(source.join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn new_snapshots_appear_without_remounting() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), "one").unwrap();
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    assert_eq!(
        fs::read_dir(mount.path.join("snapshots")).unwrap().count(),
        1
    );
    std::thread::sleep(Duration::from_millis(1100)); // another second: another name
    fs::write(source.join("f"), "two").unwrap();
    env.snapshot(&source);
    let latest_file = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap())
        .join("f");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = fs::read_dir(mount.path.join("snapshots")).unwrap().count();
        if count == 2 && fs::read_to_string(&latest_file).ok().as_deref() == Some("two") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new snapshot did not show up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_folder_read_in_many_replies_lists_every_entry_once() {
    // 3,000 names take the kernel about a hundred READDIRPLUS replies; the
    // listing made when the folder is opened serves all of them.
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("many")).unwrap();
    let mut names: Vec<String> = (0..3000).map(|i| format!("entry-{i:05}")).collect();
    for name in &names {
        fs::write(source.join("many").join(name), name).unwrap();
    }
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    let listed = |dir: &std::path::Path| {
        let mut found: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        found.sort();
        found
    };
    let inside = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap())
        .join("many");
    assert_eq!(listed(&inside), names);
    // Read again (a rewind lists afresh), and a staged copy of it too.
    assert_eq!(listed(&inside), names);
    sh(&format!(
        "cp -a {} {}/",
        inside.display(),
        mount.path.join("staging").display()
    ));
    let staged = mount.path.join("staging/many");
    assert_eq!(listed(&staged), names);
    fs::remove_file(staged.join("entry-00007")).unwrap();
    names.retain(|n| n != "entry-00007");
    assert_eq!(listed(&staged), names);
}

#[test]
fn snapshots_are_read_only() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), "content").unwrap();
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    let dir = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap());
    let erofs = |r: std::io::Result<()>| r.unwrap_err().raw_os_error() == Some(libc::EROFS);
    assert!(erofs(fs::write(dir.join("f"), "changed")));
    assert!(erofs(fs::write(dir.join("new"), "x")));
    assert!(erofs(fs::remove_file(dir.join("f"))));
    assert!(erofs(fs::create_dir(dir.join("d"))));
    // The kernel opens files without asking the mount (zero-message open),
    // so opening for appending is not refused; the write is.
    let appended = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("f"))
        .and_then(|mut f| f.write_all(b"more"));
    assert!(erofs(appended));
    assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), "content");
}

#[test]
fn tampered_blob_gives_eio_for_that_file_only() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("victim.bin"), 2 * 1024 * 1024, 1);
    fs::write(source.join("bystander.txt"), "fine").unwrap();
    env.snapshot(&source);
    let pack = env
        .pack_files()
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() > 1024 * 1024)
        .unwrap();
    let mut data = fs::read(&pack).unwrap();
    data[5000] ^= 0x10;
    fs::write(&pack, data).unwrap();
    let mount = MountGuard::new(&env, "mnt");
    let dir = mount
        .path
        .join("latest")
        .join(source.strip_prefix("/").unwrap());
    let err = fs::read(dir.join("victim.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        fs::read_to_string(dir.join("bystander.txt")).unwrap(),
        "fine"
    );
    assert!(mount.is_mounted());
    assert!(mount.log().contains("victim.bin"), "log: {}", mount.log());
}

#[test]
fn sigterm_unmounts_cleanly() {
    let env = Env::with_repo();
    let mut mount = MountGuard::new(&env, "mnt");
    assert!(mount.is_mounted());
    assert_eq!(mount.stop(), Some(0));
    assert!(!mount.is_mounted());
    // The lock is gone with it.
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
}

#[test]
fn bad_mountpoints_are_refused() {
    let env = Env::with_repo();
    let missing = env.path("missing");
    let out = env.run(&["mount", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let full = env.path("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("x"), "x").unwrap();
    let out = env.run(&["mount", full.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    // Mounted already: named with the pid that serves it.
    let mut mount = MountGuard::new(&env, "mnt");
    let out = env.run(&["mount", mount.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = mount.pid().unwrap();
    assert!(
        err.contains(&format!("already mounted by mapache (pid {pid})")),
        "{err}"
    );
    // Its process killed: the dead mount answers nothing ...
    mount.kill_9_leaving_the_mount();
    let dead = fs::read_dir(&mount.path).unwrap_err();
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN));
    // ... and the next mount clears it and mounts.
    // (The kernel may answer for the dead mount's cached entries, so the
    // guard's wait can end early: wait for the new one to list.)
    let again = MountGuard::new(&env, "mnt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::read_dir(&again.path).is_err() || !again.path.join("snapshots").is_dir() {
        assert!(std::time::Instant::now() < deadline, "{}", again.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(again.log().contains("cleared the mount"), "{}", again.log());
}

#[test]
fn mount_with_the_wrong_password_exits_12() {
    let env = Env::with_repo();
    fs::write(&env.password_file, "wrong\n").unwrap();
    let mountpoint = env.path("mnt");
    fs::create_dir_all(&mountpoint).unwrap();
    let out = env.run(&["mount", mountpoint.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    assert_eq!(
        fs::read_dir(&mountpoint).unwrap().count(),
        0,
        "nothing mounted"
    );
}

#[test]
fn inodes_the_kernel_forgets_come_back_with_the_same_numbers() {
    if !require_root("inodes_the_kernel_forgets_come_back_with_the_same_numbers") {
        return;
    }
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);
    env.snapshot(&source);
    let mount = MountGuard::new(&env, "mnt");
    let inside = mount
        .path
        .join("latest/")
        .join(source.strip_prefix("/").unwrap());
    let listing = || {
        sh(&format!(
            "cd {} && find . -printf '%i %p %s %m\\n' | sort && tar cf - --sort=name . | md5sum",
            inside.display()
        ))
    };
    let before = listing();
    // Root may make the kernel drop every unused dentry and inode: the
    // mount gets FORGET for all of them and lets their nodes go.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(listing(), before);
}
