//! Killing `snapshot` at any moment leaves a repository from which every
//! earlier snapshot restores exactly and that verifies, and the next run
//! uploads again at most what was in flight when it was killed.

use std::fs;
use std::time::Duration;

use mapache_store::BlobType;

use crate::util::{assert_same_tree, make_rich_tree, write_random_file, Env};

/// Plaintext bytes of data blobs the repository's index knows.
fn indexed_data_bytes(env: &Env) -> u64 {
    let repo = env.open_repo();
    let index = repo.index();
    index
        .iter()
        .filter(|(_, loc)| loc.blob_type == BlobType::Data)
        .map(|(_, loc)| loc.raw_length as u64)
        .sum()
}

/// Bytes of every pack file, indexed or not.
fn pack_bytes(env: &Env) -> u64 {
    env.pack_files()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn kill_snapshot_at_random_moments() {
    // Small packs, so that index pieces are written often during the run.
    let env = Env::with_repo_args(&["--pack-size", "1"]);
    let baseline = env.path("baseline");
    make_rich_tree(&baseline);
    let first = env.snapshot(&baseline);
    let first_id = first["id"].as_str().unwrap().to_string();
    let baseline_bytes = indexed_data_bytes(&env);
    let baseline_packs = pack_bytes(&env);

    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    let file_size = 16 * 1024 * 1024;
    for i in 0..14 {
        write_random_file(&big.join(format!("file-{i:02}.bin")), file_size, 100 + i);
    }
    let big_total = 14 * file_size as u64;

    // Kill points: fixed early moments (start-up, the first packs), then
    // moments right after the run wrote an index piece, which are mid-run
    // however loaded the machine is. Finished index files only count, not
    // the temporary file of one being written.
    let index_files = || {
        fs::read_dir(env.repo.join("index"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    for (round, delay_ms) in [0u64, 40, 250, 0, 10, 120].into_iter().enumerate() {
        let mut child = env
            .command(&["snapshot", big.to_str().unwrap()])
            .spawn()
            .unwrap();
        if round >= 3 {
            let before = index_files();
            while index_files() == before && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no chance to clean up anything.
        let _ = child.kill();
        child.wait().unwrap();
        let restored = env.restore(&first_id, &baseline, &format!("after-kill-{round}"));
        assert_same_tree(&baseline, &restored);
    }

    let indexed_by_killed_runs = indexed_data_bytes(&env) - baseline_bytes;
    // Every pack a killed run finished, indexed or not (its data is random,
    // so a pack holds about as many bytes as its blobs).
    let packed_by_killed_runs = pack_bytes(&env) - baseline_packs;
    let rerun = env.snapshot(&big);
    let added = rerun["summary"]["bytes_added"].as_u64().unwrap();
    // Packs the killed runs finished are used again, indexed or not: what
    // is stored again is at most what was in flight (a pack being filled
    // per sealing thread, 1 MiB packs here) and the chunks queued for them.
    assert!(
        added <= big_total.saturating_sub(packed_by_killed_runs) + 16 * 1024 * 1024,
        "rerun added {added} bytes though killed runs had finished {packed_by_killed_runs} bytes of packs"
    );
    // Trees and the odd blob whose pack was not indexed yet aside, only
    // what the killed runs did not index is uploaded again.
    assert!(
        added <= big_total - indexed_by_killed_runs + 2 * 1024 * 1024,
        "rerun added {added} bytes though killed runs had indexed {indexed_by_killed_runs} of {big_total}"
    );
    assert!(
        indexed_by_killed_runs > 0,
        "no kill happened after an index piece was written"
    );
    let restored = env.restore("latest", &big, "final");
    assert_same_tree(&big, &restored);
    env.ok(&["verify", "--read-data"]);
    let again = env.restore(&first_id, &baseline, "first-at-end");
    assert_same_tree(&baseline, &again);
}

#[test]
fn interrupt_exits_130_and_releases_the_lock() {
    let env = Env::with_repo();
    let source = env.path("source");
    fs::create_dir_all(&source).unwrap();
    for i in 0..8 {
        write_random_file(&source.join(format!("f{i}")), 16 * 1024 * 1024, i);
    }
    let child = env
        .command(&["snapshot", source.to_str().unwrap()])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
    env.ok(&["snapshot", source.to_str().unwrap()]);
}
