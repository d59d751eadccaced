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
