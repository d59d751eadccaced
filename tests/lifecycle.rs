//! Forgetting and recalling snapshots through the binary.

use std::fs;

use crate::util::{stderr, Env};

fn ids(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["log"];
    args.extend_from_slice(extra);
    env.json(&args)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn forget_by_policy_and_by_id_then_recall() {
    let env = Env::with_repo();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let mut made = Vec::new();
    for n in 0..4 {
        fs::write(a.join("f"), format!("version {n}")).unwrap();
        let tag = if n == 0 {
            "--tag=precious"
        } else {
            "--tag=plain"
        };
        let out = env.json(&["snapshot", a.to_str().unwrap(), tag]);
        made.push(out["id"].as_str().unwrap().to_string());
    }
    fs::write(b.join("g"), "other").unwrap();
    env.snapshot(&b);
    assert_eq!(ids(&env, &[]).len(), 5);

    // A dry run changes nothing and says why.
    let plan = env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "precious",
        "--dry-run",
    ]);
    assert!(
        plan.contains("tag precious") && plan.contains("would forget 2"),
        "{plan}"
    );
    assert_eq!(ids(&env, &[]).len(), 5);

    // Per group (host and paths): the newest of each, and the tagged one.
    env.ok(&["forget", "--keep-last", "1", "--keep-tag", "precious"]);
    let live = ids(&env, &[]);
    assert_eq!(live.len(), 3);
    assert!(live.contains(&made[0]) && live.contains(&made[3]));
    let forgotten = ids(&env, &["--forgotten"]);
    assert_eq!(forgotten.len(), 2);
    assert!(forgotten.contains(&made[1]) && forgotten.contains(&made[2]));

    // A forgotten snapshot still restores by id, and comes back when recalled.
    let target = env.path("restored");
    env.ok(&["restore", &made[1], "--target", target.to_str().unwrap()]);
    env.ok(&["recall", &made[1][..8]]);
    assert_eq!(ids(&env, &[]).len(), 4);

    // By id; and a policy that would keep nothing of a group is refused.
    env.ok(&["forget", &made[1][..10]]);
    assert_eq!(ids(&env, &[]).len(), 3);
    let out = env.run(&["forget", "--keep-tag", "nothing-has-this"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("keeps no snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ids(&env, &[]).len(), 3);
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn diff_names_added_removed_changed_and_metadata_only() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep/deep")).unwrap();
    fs::create_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("keep/deep/same"), "same").unwrap();
    fs::write(src.join("keep/edit"), "before").unwrap();
    fs::write(src.join("keep/chmod"), "mode").unwrap();
    fs::write(src.join("gone/a"), "aaaa").unwrap();
    let first = env.snapshot(&src)["id"].as_str().unwrap().to_string();
    fs::write(src.join("keep/edit"), "after!").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("keep/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("new"), "123456789").unwrap();
    let second = env.snapshot(&src)["id"].as_str().unwrap().to_string();

    let out = env.json(&["diff", &first, &second]);
    let lines: Vec<(String, String)> = out["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["change"].as_str().unwrap().to_string(),
                d["path"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(_, p)| p.contains("/src/"))
        .collect();
    let has =
        |change: &str, tail: &str| lines.iter().any(|(c, p)| c == change && p.ends_with(tail));
    assert!(has("added", "/src/new"), "{lines:?}");
    assert!(has("removed", "/src/gone/"), "{lines:?}");
    assert!(has("removed", "/src/gone/a"), "{lines:?}");
    assert!(has("modified", "/src/keep/edit"), "{lines:?}");
    assert!(has("metadata", "/src/keep/chmod"), "{lines:?}");
    assert!(!lines.iter().any(|(_, p)| p.contains("same")), "{lines:?}");
    assert_eq!(out["totals"]["added_bytes"], 9);
    assert_eq!(out["totals"]["removed_bytes"], 4);

    // A folder inside each, in text.
    let sub = format!("{}/keep", src.display());
    let text = env.ok(&[
        "diff",
        &format!("{first}:{sub}"),
        &format!("{second}:{sub}"),
    ]);
    assert!(text.contains("M    ") && text.contains("/edit"), "{text}");
    assert!(!text.contains("/new"), "{text}");
}

#[test]
fn stats_count_files_and_unique_data() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    crate::util::write_random_file(&src.join("a"), 100_000, 1);
    fs::copy(src.join("a"), src.join("copy-of-a")).unwrap();
    fs::write(src.join("text"), "x".repeat(50_000)).unwrap();
    let id = env.snapshot(&src)["id"].as_str().unwrap().to_string();
    env.snapshot(&src);
    let one = env.json(&["stats", &id]);
    assert_eq!(one["files"], 3);
    assert_eq!(one["restore_bytes"], 250_000);
    // The copy is stored once; the text compresses.
    assert_eq!(one["raw_bytes"], 150_000);
    assert!(one["stored_bytes"].as_u64().unwrap() < 110_000);
    assert!(one["dedup_ratio"].as_f64().unwrap() > 1.6);
    let all = env.json(&["stats"]);
    assert_eq!(all["snapshots"], 2);
    assert_eq!(all["files"], 6);
    assert_eq!(all["raw_bytes"], 150_000);
    assert!(all["repository"]["packs"].as_u64().unwrap() >= 2);
}

#[test]
fn find_by_name_path_time_and_object() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs/old")).unwrap();
    fs::write(src.join("docs/report.pdf"), "pdf").unwrap();
    fs::write(src.join("docs/old/report.pdf"), "older pdf").unwrap();
    fs::write(src.join("notes.txt"), "notes").unwrap();
    let first = env.snapshot(&src)["id"].as_str().unwrap().to_string();
    fs::write(src.join("later.pdf"), "later").unwrap();
    env.snapshot(&src);

    let paths = |args: &[&str]| -> Vec<Vec<String>> {
        let mut all = vec!["find"];
        all.extend_from_slice(args);
        env.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["found"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["path"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    // By name, in both snapshots (the first lacks later.pdf).
    let found = paths(&["*.pdf"]);
    assert_eq!(found.len(), 2);
    assert_eq!(found.iter().map(Vec::len).collect::<Vec<_>>(), [2, 3]);
    assert!(found[0]
        .iter()
        .all(|p| p.starts_with(&*src.to_string_lossy())));
    // By path, in one snapshot.
    let pattern = format!("{}/docs/*/*.pdf", src.display());
    let found = paths(&[&pattern, "--snapshot", &first[..8]]);
    assert_eq!(found, [[format!("{}/docs/old/report.pdf", src.display())]]);
    // Nothing modified after the future.
    assert!(paths(&["*.pdf", "--newer", "2999-01-01"]).is_empty());
    // The files that use a blob.
    let repo = env.open_repo();
    let blob = {
        let (_, snapshot) = repo.find_snapshot(&first).unwrap();
        let mut tree = repo.load_tree(&snapshot.tree).unwrap();
        for part in src.join("docs").iter().skip(1) {
            let node = tree.find(part.as_encoded_bytes()).unwrap().clone();
            tree = repo.load_tree(&node.subtree.unwrap()).unwrap();
        }
        tree.find(b"report.pdf").unwrap().content[0]
    };
    let found = paths(&["--blob", &blob.to_hex()[..12]]);
    assert_eq!(found.len(), 2);
    assert!(found[0][0].ends_with("/docs/report.pdf"), "{found:?}");
}

#[test]
fn log_narrows_and_restic_words_work() {
    let env = Env::with_repo();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    // restic's words: `backup` and `snapshots`.
    env.ok(&["backup", a.to_str().unwrap(), "--description", "first of a"]);
    env.ok(&["backup", b.to_str().unwrap()]);
    env.ok(&["snapshot", a.to_str().unwrap()]);
    assert_eq!(ids(&env, &[]).len(), 3);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
    assert_eq!(ids(&env, &["--latest", "2"]).len(), 2);
    assert_eq!(ids(&env, &["--path", a.to_str().unwrap()]).len(), 2);
    let compact = env.ok(&["log", "--compact"]);
    assert_eq!(compact.lines().count(), 3, "{compact}");
    let groups = env.json(&["log", "--group-by", "paths"]);
    let sizes: Vec<usize> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["snapshots"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 3);
    assert!(sizes.contains(&2) && sizes.contains(&1), "{groups}");
    assert!(env
        .ok(&["log", "--group-by", "host,paths"])
        .contains("paths "));
    assert!(env.ok(&["log"]).contains("first of a"));
}

#[test]
fn snapshot_options_restic_users_reach_for() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("fake-cache")).unwrap();
    fs::create_dir_all(src.join("marked")).unwrap();
    let listed = env.path("elsewhere");
    fs::create_dir_all(&listed).unwrap();
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(src.join("cache/blob"), "cached").unwrap();
    fs::write(src.join("fake-cache/CACHEDIR.TAG"), "not a real tag").unwrap();
    fs::write(src.join("marked/.nobackup"), "").unwrap();
    fs::write(src.join("marked/secret"), "s").unwrap();
    fs::write(src.join("big"), vec![1u8; 300_000]).unwrap();
    fs::write(src.join("small"), "small").unwrap();
    fs::write(src.join("Upper.TMP"), "tmp").unwrap();
    fs::write(listed.join("one"), "1").unwrap();
    let list = env.path("list.txt");
    fs::write(&list, format!("# paths\n{}\n", listed.display())).unwrap();
    let out = env.json(&[
        "snapshot",
        src.join("cache").parent().unwrap().to_str().unwrap(),
        "--files-from",
        list.to_str().unwrap(),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "100K",
        "--iexclude",
        "*.tmp",
        "--time",
        "2020-02-03 04:05:06",
    ]);
    let id = out["id"].as_str().unwrap();
    let listing = env.ok(&["ls", id, src.to_str().unwrap(), "-R"]);
    for gone in ["/src/cache", "/src/marked", "/src/big", "Upper.TMP"] {
        assert!(!listing.contains(gone), "{gone} in {listing}");
    }
    for kept in ["fake-cache", "small"] {
        assert!(listing.contains(kept), "{kept} not in {listing}");
    }
    let log = env.json(&["log"]);
    assert!(log[0]["paths"].to_string().contains("elsewhere"), "{log}");
    assert!(env
        .ok(&["ls", id, listed.to_str().unwrap()])
        .contains("one"));
    let when = env.ok(&["log", "--compact"]);
    assert!(when.contains("2020-02-03 04:05:06"), "{when}");
}

#[test]
fn ls_human_sizes_raw_names_and_json_errors() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), vec![0u8; 3 << 20]).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    fs::write(src.join(odd), "latin-1 name").unwrap();
    env.snapshot(&src);
    let long = env.ok(&["ls", "latest", src.to_str().unwrap(), "-l", "-H"]);
    assert!(long.contains("3.0 MiB"), "{long}");
    let list = env.json(&["ls", "latest", src.to_str().unwrap()]);
    let odd_entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("path_bytes").is_some())
        .expect("the non-UTF-8 name carries its bytes");
    let bytes: Vec<u8> = odd_entry["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert!(bytes.ends_with(b"/caf\xe9"));
    let out = env.run(&["--json", "ls", "nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["exit_code"], 1);
    assert!(error["error"].as_str().unwrap().contains("nonexistent"));
}

#[test]
fn list_names_the_files_of_each_kind() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    let id = env.snapshot(&src)["id"].as_str().unwrap().to_string();
    assert_eq!(env.ok(&["list", "snapshots"]).trim(), id);
    let packs = env.ok(&["list", "packs"]);
    assert_eq!(packs.lines().count(), env.pack_files().len());
    for pack in packs.lines() {
        env.ok(&["cat", "pack", pack]);
    }
    assert_eq!(env.json(&["list", "keys"]).as_array().unwrap().len(), 1);
    assert!(env.ok(&["list", "locks"]).is_empty());
}

#[test]
fn id_prefixes_work_for_every_kind_and_ambiguity_lists_candidates() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("f{i}")), format!("file {i}")).unwrap();
        env.snapshot(&src);
    }
    // 40 snapshots: some one-digit prefix is shared.
    let snapshots = env.ok(&["list", "snapshots"]);
    let mut by_digit = std::collections::HashMap::new();
    for id in snapshots.lines() {
        *by_digit.entry(&id[..1]).or_insert(0) += 1;
    }
    let shared = by_digit
        .iter()
        .find(|(_, n)| **n > 1)
        .unwrap()
        .0
        .to_string();
    let out = env.run(&["cat", "snapshot", &shared]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ambiguous") && stderr(&out).contains(", "),
        "{}",
        stderr(&out)
    );
    // Prefixes of packs, index files and keys.
    let pack = env
        .ok(&["list", "packs"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    env.ok(&["cat", "pack", &pack[..12]]);
    let index = env
        .ok(&["list", "index"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    env.ok(&["cat", "index", &index[..12]]);
    let key = env.ok(&["list", "keys"]).trim().to_string();
    env.ok(&["cat", "key", &key[..8]]);
}

#[test]
fn snapshot_from_stdin_stores_one_named_file() {
    use std::io::Write;
    let env = Env::with_repo();
    let dump = crate::util::random_bytes(3_000_000, 9);
    let store = |name: &str| {
        let mut child = env
            .command(&["--json", "snapshot", "--stdin", "--stdin-filename", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&dump).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = store("db.sql");
    assert_eq!(first["summary"]["total_bytes"], 3_000_000);
    // The same stream again adds no data (only its new tree).
    let second = store("db.sql");
    assert!(
        second["summary"]["bytes_added"].as_u64().unwrap() < 1000,
        "{second}"
    );
    let log = env.json(&["log"]);
    assert_eq!(log[1]["paths"][0], "/db.sql");
    let target = env.path("restored");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("db.sql")).unwrap(), dump);
    let bad = env.run(&["snapshot", "--stdin", "--stdin-filename", "a/b"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
}
