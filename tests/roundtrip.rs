//! Snapshot and restore round trips on real trees.

use std::fs;

use crate::util::{assert_same_tree, assert_success, make_rich_tree, write_random_file, Env};

#[test]
fn rich_tree_round_trip_and_incremental_snapshot() {
    let env = Env::with_repo();
    let source = env.path("source");
    make_rich_tree(&source);

    let first = env.snapshot(&source);
    let summary = &first["summary"];
    assert_eq!(summary["files_unchanged"], 0);
    assert!(summary["files_new"].as_u64().unwrap() > 40);
    assert_eq!(summary["errors"], 0);
    // Compression and de-duplication: the zero runs and the text shrink.
    let total = summary["total_bytes"].as_u64().unwrap();
    let stored = summary["bytes_stored"].as_u64().unwrap();
    assert!(
        stored < total - 20 * 1024 * 1024,
        "stored {stored} of {total}"
    );

    let restored = env.restore("latest", &source, "restore-1");
    assert_same_tree(&source, &restored);

    // Nothing changed: nothing is read, no data blob is added.
    let second = env.snapshot(&source);
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert_eq!(second["summary"]["files_new"], 0);
    assert_eq!(second["summary"]["files_changed"], 0);
    assert_eq!(second["parent"], first["id"]);

    // One file changed, one added, one removed.
    write_random_file(&source.join("deep/er/small-3.txt"), 5000, 77);
    fs::write(source.join("added.txt"), "new file\n").unwrap();
    fs::remove_file(source.join("empty")).unwrap();
    let third = env.snapshot(&source);
    assert_eq!(third["summary"]["files_changed"], 1);
    assert_eq!(third["summary"]["files_new"], 1);
    assert_eq!(third["summary"]["bytes_read"], 5000 + 9);
    let restored = env.restore(third["id"].as_str().unwrap(), &source, "restore-3");
    assert_same_tree(&source, &restored);

    // The first snapshot still restores exactly as it was.
    let log = env.json(&["log"]);
    assert_eq!(log.as_array().unwrap().len(), 3);
    let first_again = env.restore(
        &first["short_id"].as_str().unwrap()[..6],
        &source,
        "restore-1b",
    );
    assert!(first_again.join("empty").exists());
    assert!(!first_again.join("added.txt").exists());
}

#[test]
fn restore_rerun_skips_correct_files_and_repairs_others() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("a.bin"), 3 * 1024 * 1024, 1);
    write_random_file(&source.join("b.bin"), 3 * 1024 * 1024, 2);
    fs::write(source.join("c.txt"), "ccc").unwrap();
    env.snapshot(&source);
    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join(source.strip_prefix("/").unwrap());
    // Damage one file, remove another: a rerun fixes exactly those.
    fs::write(restored.join("a.bin"), b"garbage").unwrap();
    fs::remove_file(restored.join("c.txt")).unwrap();
    let report = env.json(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(report["report"]["files_unchanged"], 1, "{report}");
    assert_eq!(report["report"]["bytes_written"], 3 * 1024 * 1024 + 3);
    assert_eq!(report["report"]["verified"], 3);
    assert_same_tree(&source, &restored);
}

#[test]
fn include_exclude_and_ls() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("keep/inner")).unwrap();
    fs::create_dir_all(source.join("skip")).unwrap();
    fs::write(source.join("keep/inner/x.txt"), "x").unwrap();
    fs::write(source.join("keep/y.tmp"), "y").unwrap();
    fs::write(source.join("skip/z.txt"), "z").unwrap();
    let src = source.to_str().unwrap();
    let report = env.json(&[
        "snapshot",
        src,
        "--exclude",
        "*.tmp",
        "--tag",
        "t1",
        "--description",
        "hello",
    ]);
    assert_eq!(report["summary"]["files_new"], 2);

    let listing = env.ok(&["ls", "latest", src, "-R"]);
    let expected: Vec<String> = [
        "keep",
        "keep/inner",
        "keep/inner/x.txt",
        "skip",
        "skip/z.txt",
    ]
    .iter()
    .map(|p| format!("{src}/{p}"))
    .collect();
    assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
    let long = env.ok(&["ls", "latest", &format!("{src}/keep/inner/x.txt"), "-l"]);
    assert!(long.starts_with("-rw"), "{long}");
    let json = env.json(&["ls", "latest", &format!("{src}/keep")]);
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["type"], "dir");

    let target = env.path("target");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        "inner",
    ]);
    let restored = target.join(source.strip_prefix("/").unwrap());
    assert!(restored.join("keep/inner/x.txt").is_file());
    assert!(!restored.join("skip").exists());

    let snap = env.json(&["cat", "snapshot", "latest"]);
    assert_eq!(snap["tags"][0], "t1");
    assert_eq!(snap["description"], "hello");
    let config = env.json(&["cat", "config"]);
    assert_eq!(config["version"], 1);
    let tree = env.json(&["cat", "tree", snap["tree"].as_str().unwrap()]);
    assert!(tree["nodes"].as_array().is_some());
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("a.bin"), 1024 * 1024, 5);
    let before = env.repo_files();
    let report = env.json(&["snapshot", "--dry-run", source.to_str().unwrap()]);
    assert_eq!(report["dry_run"], true);
    // It reports what a real run would add...
    assert!(report["summary"]["bytes_added"].as_u64().unwrap() >= 1024 * 1024);
    // ...and stores none of it.
    assert_eq!(env.repo_files(), before);
    assert_eq!(env.json(&["log"]).as_array().unwrap().len(), 0);
}

#[test]
fn identical_files_are_stored_once() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    write_random_file(&source.join("one.bin"), 6 * 1024 * 1024, 9);
    fs::copy(source.join("one.bin"), source.join("two.bin")).unwrap();
    let report = env.snapshot(&source);
    let added = report["summary"]["bytes_added"].as_u64().unwrap();
    // One copy of the data plus the small trees.
    assert!(added < 6 * 1024 * 1024 + 64 * 1024, "added {added}");
}

#[test]
fn sparse_files_are_restored_sparse() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    let file = fs::File::create(source.join("disk.img")).unwrap();
    file.set_len(64 * 1024 * 1024).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"middle", 32 * 1024 * 1024).unwrap();
    drop(file);
    env.snapshot(&source);
    let restored = env.restore("latest", &source, "target");
    assert_same_tree(&source, &restored);
    let meta = fs::metadata(restored.join("disk.img")).unwrap();
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    assert!(
        allocated < 16 * 1024 * 1024,
        "{allocated} bytes allocated for a 64 MiB sparse file"
    );
}

#[test]
fn exclude_file_and_cat_objects() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(source.join("cache")).unwrap();
    fs::write(source.join("keep.txt"), "kept").unwrap();
    fs::write(source.join("cache/junk"), "junk").unwrap();
    fs::write(source.join("notes.bak"), "backup copy").unwrap();
    let exclude_file = env.path("excludes");
    fs::write(
        &exclude_file,
        format!("# comment\n*.bak\n{}/cache\n", source.display()),
    )
    .unwrap();
    env.json(&[
        "snapshot",
        source.to_str().unwrap(),
        "--exclude-file",
        exclude_file.to_str().unwrap(),
    ]);
    let listing = env.ok(&["ls", "latest", source.to_str().unwrap()]);
    assert_eq!(listing.trim(), format!("{}/keep.txt", source.display()));

    // Every kind of object prints, decrypted.
    let index_id = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let index = env.json(&["cat", "index", index_id.to_str().unwrap()]);
    let pack = &index["packs"][0];
    let pack_json = env.json(&["cat", "pack", pack["id"].as_str().unwrap()]);
    assert_eq!(pack_json["blobs"], pack["blobs"]);
    let key_id = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let key = env.json(&["cat", "key", key_id.to_str().unwrap()]);
    assert_eq!(key["kdf"], "argon2id");
    // The data blob of keep.txt is its content.
    let data_pack = index["packs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "data")
        .unwrap();
    let blob_id = data_pack["blobs"][0]["id"].as_str().unwrap();
    assert_eq!(env.ok(&["cat", "blob", blob_id]), "kept");
}

#[test]
fn password_sources() {
    let env = Env::with_repo();
    // From a command.
    let out = env
        .command_without_password(&[
            "log",
            "--password-command",
            &format!("cat {}", env.password_file.display()),
        ])
        .output()
        .unwrap();
    assert_success(&out);
    // From the environment, with the repository from the environment too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mapache"))
        .arg("log")
        .env("MAPACHE_REPOSITORY", &env.repo)
        .env("MAPACHE_PASSWORD", crate::util::PASSWORD)
        .env_remove("MAPACHE_PASSWORD_FILE")
        .env_remove("MAPACHE_PASSWORD_COMMAND")
        .output()
        .unwrap();
    assert_success(&out);
    // A failing password command is a clear error.
    let out = env
        .command_without_password(&["log", "--password-command", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password command"));
}
