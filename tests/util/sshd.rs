//! A private sshd on a free port of 127.0.0.1, with its own host key and
//! a client key it accepts for root; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    /// The client's private key.
    pub client_key: PathBuf,
    /// A known_hosts file listing the server's key.
    pub known_hosts: PathBuf,
    child: Option<Child>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a helper");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    /// Generates keys in `dir` and starts the server.
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: scripts/test.sh installs openssh-server"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        for key in [&host_key, &client_key] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(key));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nSubsystem sftp internal-sftp\nMaxSessions 64\nMaxStartups 64\n",
                host = host_key.display(),
                dir = dir.display()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        let mut sshd = Sshd {
            dir: dir.to_path_buf(),
            port,
            client_key,
            known_hosts,
            child: None,
        };
        sshd.resume();
        sshd
    }

    /// Starts the server (again, after `kill`).
    pub fn resume(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .arg("-E")
            .arg(self.dir.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and every session it started (as a lost link).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The listener's session processes are its children: end them too.
            let _ = Command::new("pkill")
                .arg("-KILL")
                .arg("-P")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `sftp://root@127.0.0.1:PORT/path`.
    pub fn url(&self, path: &Path) -> String {
        format!("sftp://root@127.0.0.1:{}{}", self.port, path.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}
