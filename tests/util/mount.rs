//! A `mapache mount` process for a test, unmounted however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Env;

/// A running mount; dropping it stops the process and makes sure nothing
/// stays mounted, even when the test panicked.
pub struct MountGuard {
    pub path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

pub fn is_mounted(path: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == canonical.to_string_lossy())
}

/// Clears whatever is still mounted at `path` (a stale mount after a
/// crash, or one that did not end).
pub fn force_unmount(path: &Path) {
    if is_mounted(path) {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(path)
            .status();
    }
    if is_mounted(path) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(path)
            .status();
    }
}

impl MountGuard {
    /// Mounts the repository of `env` on a new folder `name` and waits
    /// until the mount answers.
    pub fn new(env: &Env, name: &str) -> MountGuard {
        MountGuard::with_args(env, name, &[])
    }

    /// Like [`MountGuard::new`], with more `mount` arguments.
    pub fn with_args(env: &Env, name: &str, args: &[&str]) -> MountGuard {
        let path = env.path(name);
        std::fs::create_dir_all(&path).unwrap();
        let log = env.path(&format!("{name}.log"));
        let child = env
            .command(&["mount", path.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = MountGuard {
            path,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !guard.path.join("snapshots").exists() {
            if let Some(status) = guard.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mount exited with {status}: {}", guard.log());
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up: {}",
                guard.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        guard
    }

    /// What the mount process printed to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the mount with SIGTERM; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.path)
    }

    /// SIGKILLs the mount process, as a crash would, and clears the stale
    /// mount it leaves behind.
    pub fn kill_9(&mut self) {
        self.kill_9_leaving_the_mount();
        force_unmount(&self.path);
    }

    /// SIGKILLs the mount process and leaves its dead mount in place.
    pub fn kill_9_leaving_the_mount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The mount process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.id())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.stop();
        force_unmount(&self.path);
    }
}

/// How many pages of the file at `path` are in the page cache, asked
/// without reading it (mmap + mincore, as `fincore` does).
pub fn resident_pages(path: &Path) -> usize {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a private read-only mapping of a file we hold open, never
    // dereferenced; mincore only fills `vec` (one byte per page) and the
    // mapping is removed before returning.
    #[allow(unsafe_code)]
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore {}", path.display());
    }
    vec.iter().filter(|&&b| b & 1 == 1).count()
}
