//! Repositories in an S3-compatible object store: a 3-node Garage cluster
//! on 127.0.0.1 with replication factor 3.

use std::fs;
use std::time::{Duration, Instant};

use crate::util::{
    assert_same_tree, make_rich_tree, snapshot_restore_and_mount, write_random_file, Env, Garage,
};

fn init(env: &Env, extra: &[&str]) {
    let mut args = vec!["init", "--kdf-memory", "8192", "--kdf-iterations", "1"];
    args.extend_from_slice(extra);
    env.ok(&args);
}

#[test]
fn a_repository_in_an_object_store_works_like_a_local_one() {
    let scratch = tempfile::tempdir().unwrap();
    let garage = Garage::start(&scratch.path().join("garage"));
    let env = Env::over_s3(&garage, "repo");
    init(&env, &[]);
    // A second init into the same prefix is refused.
    let again = env.run(&["init", "--kdf-memory", "8192", "--kdf-iterations", "1"]);
    assert!(!again.status.success());
    let source = env.path("source");
    make_rich_tree(&source);
    let first = env.snapshot(&source);
    let second = env.snapshot(&source);
    assert_eq!(second["summary"]["bytes_read"], 0);
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
    env.ok(&["verify", "--read-data"]);
    env.ok(&["forget", first["id"].as_str().unwrap()]);
    env.ok(&["clean", "--keep-forgotten", "0"]);
    env.ok(&["verify"]);
    // Another node of the cluster serves the same repository; restic's
    // spelling names it.
    let mut other = Env::over_s3(&garage, "repo");
    other.password_file = env.password_file.clone();
    other.location = format!("s3:{}/{}/repo", garage.endpoints[1], garage.bucket);
    assert_eq!(other.json(&["log"]), env.json(&["log"]));
}

#[test]
fn a_snapshot_goes_on_while_a_node_is_down() {
    let scratch = tempfile::tempdir().unwrap();
    let garage = Garage::start(&scratch.path().join("garage"));
    let env = Env::over_s3(&garage, "repo");
    init(&env, &["--pack-size", "1"]);
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    for n in 0..8 {
        write_random_file(&source.join(format!("f{n}")), 6 << 20, 900 + n);
    }
    let mut child = env
        .command(&["snapshot", source.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node (not the one the client talks to) dies mid-run.
    std::thread::sleep(Duration::from_millis(700));
    garage.kill_node(3);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the snapshot hangs"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "the snapshot failed with a node down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = env.restore("latest", &source, "restored");
    assert_same_tree(&source, &restored);
    env.ok(&["verify", "--read-data"]);
}

#[test]
fn a_repository_20_ms_away_works() {
    let scratch = tempfile::tempdir().unwrap();
    let garage = Garage::start(&scratch.path().join("garage"));
    let node1: u16 = garage.endpoints[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = crate::util::DelayProxy::start(node1, 20);
    let mut env = Env::over_s3(&garage, "far");
    env.location = format!("s3:http://127.0.0.1:{}/{}/far", proxy.port, garage.bucket);
    init(&env, &[]);
    snapshot_restore_and_mount(&env);
}
