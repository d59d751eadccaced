//! A TCP proxy adding a delay each way (scripts/delay_proxy.py), for
//! repositories reached as across a network; stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct DelayProxy {
    pub port: u16,
    child: Child,
}

impl DelayProxy {
    /// Forwards a new port of 127.0.0.1 to `target`, `delay_ms` each way.
    pub fn start(target: u16, delay_ms: u32) -> DelayProxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/delay_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([port.to_string(), target.to_string(), delay_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the delay proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the delay proxy did not start");
        DelayProxy { port, child }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
