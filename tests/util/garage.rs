//! A 3-node Garage cluster on 127.0.0.1 (scripts/garage-cluster.sh),
//! stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Garage {
    pub dir: PathBuf,
    /// Credentials and region, for the commands' environment.
    pub vars: Vec<(String, String)>,
    /// Each node's S3 endpoint.
    pub endpoints: Vec<String>,
    pub bucket: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage-cluster.sh")
}

impl Garage {
    pub fn start(dir: &Path) -> Garage {
        let out = Command::new(script())
            .arg("start")
            .arg(dir)
            .output()
            .expect("run garage-cluster.sh");
        let garage = Garage {
            dir: dir.to_path_buf(),
            vars: Vec::new(),
            endpoints: Vec::new(),
            bucket: String::new(),
        };
        assert!(
            out.status.success(),
            "the Garage cluster did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut garage = garage;
        for line in std::fs::read_to_string(dir.join("env")).unwrap().lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            match key {
                "GARAGE_ENDPOINTS" => {
                    garage.endpoints = value.split_whitespace().map(str::to_string).collect()
                }
                "GARAGE_BUCKET" => garage.bucket = value.to_string(),
                _ => garage.vars.push((key.to_string(), value.to_string())),
            }
        }
        garage
    }

    /// The repository string for `prefix` in the bucket, through node 1.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3:{}/{}/{prefix}", self.endpoints[0], self.bucket)
    }

    /// Kills node `n` (1 to 3) at once, as a crash would.
    pub fn kill_node(&self, n: usize) {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        let pid = pids.lines().nth(n - 1).unwrap().trim().to_string();
        let _ = Command::new("kill").arg("-9").arg(&pid).status();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
