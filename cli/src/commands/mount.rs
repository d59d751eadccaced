//! `mapache mount`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exit::Outcome;
use crate::global::GlobalOptions;

/// Mount the repository: snapshots as read-only folders, staging writable
///
/// Layout: snapshots/<time>/, ids/<short id>/, latest, tags/<tag>/<time>/,
/// hosts/<host>/<time>/, and staging/, where files copied in become the
/// next snapshot at `mapache commit`. Runs in the foreground until Ctrl-C
/// (or SIGTERM, or `umount`), then unmounts; with --background it returns
/// once mounted and keeps serving until `umount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An empty folder to mount on
    mountpoint: PathBuf,

    /// Let other users use the mount too (needs user_allow_other in
    /// /etc/fuse.conf unless run as root); the kernel then checks their
    /// access against ACLs as well as modes
    #[arg(long)]
    allow_other: bool,

    /// Memory for decrypted blobs, in MiB (the kernel's page cache keeps
    /// what was read; this only has to hold what is being read ahead)
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    cache_size: usize,

    /// Start staging/ from this snapshot (`latest`, an id) or `empty`; only
    /// when it holds no uncommitted changes on another base
    #[arg(long, value_name = "SNAPSHOT")]
    base: Option<String>,

    /// With `--base latest`: which snapshots `latest` is the newest of
    #[command(flatten)]
    filter: crate::selection::SnapshotFilter,

    /// Return once mounted and keep serving in the background until
    /// `umount`; messages go to the log file
    #[arg(long)]
    background: bool,

    /// Log file of a background mount (default: mount.log in the state
    /// folder of the repository)
    #[arg(long, value_name = "FILE", requires = "background")]
    log_file: Option<PathBuf>,

    /// Commit the staging area by itself this often (30s, 5m, 1h) when it
    /// has changes and has been quiet for a few seconds; the snapshots
    /// are tagged `auto`
    #[arg(long, value_name = "DURATION", value_parser = crate::global::parse_wait)]
    commit_every: Option<std::time::Duration>,

    /// Commit the staging area when unmounted, if it has changes
    #[arg(long)]
    commit_on_unmount: bool,

    /// Set by a background mount for the process it starts
    /// (`background::CHILD_FLAG`)
    #[arg(long = "background-child", hide = true)]
    background_child: bool,
}

/// Refuses mountpoints that would surprise: missing, not a folder, not
/// empty, or already a mount point (a live mapache mount is named with
/// its pid; one whose process died is cleared, as nothing else can use
/// it).
fn check_mountpoint(path: &Path) -> Result<()> {
    if let Some(existing) = crate::mounts::mount_at(path) {
        // Mounted by fusermount the type says `fuse.mapache`; by root
        // directly, only the source does.
        let mapache = existing.fstype == "fuse.mapache" || existing.source.starts_with("mapache:");
        // The kernel may still answer `stat` from its cache; listing
        // reaches the (dead) process.
        let dead = matches!(
            std::fs::read_dir(path),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTCONN)
        );
        match (mapache, dead) {
            (true, true) => clear_dead_mount(path)?,
            (true, false) => {
                let pid = existing.source.strip_prefix("mapache:").unwrap_or("?");
                bail!(
                    "{} is already mounted by mapache (pid {pid})",
                    path.display()
                )
            }
            (false, true) => bail!(
                "{} is a {} mount whose process has ended; clear it with `fusermount3 -u {}`",
                path.display(),
                existing.fstype,
                path.display()
            ),
            (false, false) => bail!(
                "{} is already a mount point ({})",
                path.display(),
                existing.fstype
            ),
        }
    }
    let meta = std::fs::metadata(path).with_context(|| format!("mountpoint {}", path.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a folder", path.display());
    }
    let mut entries =
        std::fs::read_dir(path).with_context(|| format!("mountpoint {}", path.display()))?;
    if entries.next().is_some() {
        bail!("mountpoint {} is not empty", path.display());
    }
    Ok(())
}

/// Unmounts a mapache mount whose process died (`Transport endpoint is
/// not connected` for every use of it), or says how to.
fn clear_dead_mount(path: &Path) -> Result<()> {
    for tool in ["fusermount3", "fusermount"] {
        let cleared = std::process::Command::new(tool)
            .args(["-u", "-z"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if cleared {
            eprintln!(
                "note: cleared the mount left on {} by a mapache process that ended",
                path.display()
            );
            return Ok(());
        }
    }
    bail!(
        "{} is a mapache mount whose process has ended, and it could not be cleared: \
         run `fusermount3 -u {}` (or `umount -l` as root)",
        path.display(),
        path.display()
    )
}

/// Says plainly why FUSE cannot be used, before a password is asked for.
#[cfg(feature = "fuse")]
fn check_fuse_device() -> Result<()> {
    const DEVICE: &str = "/dev/fuse";
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEVICE)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{DEVICE} is missing: load the fuse kernel module (modprobe fuse) or install fuse3"
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("no permission to use {DEVICE}: ask for access to it (or run as root)")
        }
        Err(e) => bail!("cannot use {DEVICE}: {e}"),
    }
}

#[cfg(feature = "fuse")]
pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    use std::sync::Arc;
    use std::time::Duration;

    use mapache_fs::control::{self, ControlRequest, ControlResponse};
    use mapache_fs::staging::{Committed, Staging};
    use mapache_fs::FsError;

    use crate::auto_commit::AutoCommit;
    use mapache_fs::{MountOptions, Namespace};

    if args.background_child {
        crate::background::leave_session();
    }
    check_mountpoint(&args.mountpoint)?;
    check_fuse_device()?;
    if args.background && !args.background_child {
        return crate::background::start(global, &args.mountpoint);
    }
    let repo = global.open()?;
    let lock = global.lock_for_reading(&repo)?;
    let staging_dir = global.staging_dir(&repo)?;
    let repo = Arc::new(repo.load_index()?);
    let mut namespace = Namespace::new(
        repo.clone(),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let commits_by_itself = args.commit_every.is_some() || args.commit_on_unmount;
    let mut staging = None;
    if lock.read_only {
        if commits_by_itself {
            bail!("--commit-every and --commit-on-unmount need a repository that can be written");
        }
        // Staged data goes into the repository as it is written.
        eprintln!("note: staging/ is left out: it needs a repository that can be written");
    } else {
        mapache_store::rebuild_index::index_unindexed_packs(&repo)?;
        match Staging::open(repo.clone(), &staging_dir) {
            Ok(opened) => {
                let opened = Arc::new(opened);
                if let Some(spec) = &args.base {
                    choose_base(&repo, &opened, spec, &args.filter)?;
                }
                if !global.quiet {
                    match opened.base() {
                        Some(id) => eprintln!("staging/ continues snapshot {}", id.short()),
                        None => eprintln!("staging/ starts empty"),
                    }
                }
                namespace = namespace.with_staging(opened.clone());
                staging = Some(opened);
            }
            // Another mount (or a `stage` command) has it: this mount shows
            // the snapshots, and `commit` still reaches the one that holds
            // the staging area.
            Err(FsError::Busy(why)) if !commits_by_itself && args.base.is_none() => {
                eprintln!("note: staging/ is left out: {why}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let namespace = Arc::new(namespace);
    let mut auto_commit = staging
        .clone()
        .filter(|_| commits_by_itself)
        .map(|staging| {
            AutoCommit::new(
                namespace.clone(),
                staging,
                args.commit_every,
                args.commit_on_unmount,
            )
        });
    // `mapache commit` and `mapache stage` in another shell reach the
    // staging through us.
    if staging.is_some() {
        let namespace = namespace.clone();
        control::serve(&staging_dir, move |request| match request {
            ControlRequest::Commit(request) => match namespace.commit(&request) {
                Ok(Committed::Snapshot(id, _)) => ControlResponse::Committed(id.to_hex()),
                Ok(Committed::NothingToCommit { base }) => {
                    ControlResponse::NothingToCommit(base.map(|id| id.to_hex()))
                }
                Err(e) => ControlResponse::Failed(e.to_string()),
            },
            ControlRequest::Stage(request) => match namespace.stage_request(request) {
                Ok(answer) => ControlResponse::Staged(answer),
                Err(e) => ControlResponse::Failed(e.to_string()),
            },
        })
        .context("cannot listen for commit and stage requests")?;
    }
    let options = MountOptions {
        allow_other: args.allow_other,
        cache_bytes: args.cache_size << 20,
        threads: global.threads().max(2),
    };
    let interrupts = crate::interrupt::take_interrupts();
    let mounted = mapache_fs::mount(namespace, &args.mountpoint, &options)
        .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    if let Some(staging) = &staging {
        // As /proc/self/mountinfo names it, for `mount_ending`.
        let shown = std::fs::canonicalize(&args.mountpoint).unwrap_or(args.mountpoint.clone());
        staging.note_holder(&format!("mount on {}", shown.display()));
    }
    if args.background_child {
        let log = match &args.log_file {
            Some(file) => file.clone(),
            None => staging_dir.with_file_name("mount.log"),
        };
        crate::background::report_ready(&log)?;
    } else if !global.quiet {
        eprintln!(
            "mounted on {}; Ctrl-C or `umount {}` to stop",
            args.mountpoint.display(),
            args.mountpoint.display()
        );
    }
    while !mounted.is_finished() {
        if interrupts.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Some(auto_commit) = &mut auto_commit {
            auto_commit.tick();
        }
    }
    mounted.unmount().context("unmounting")?;
    crate::interrupt::clear_hook();
    if let Some(auto_commit) = &mut auto_commit {
        auto_commit.unmounted();
    }
    if !global.quiet {
        eprintln!("unmounted {}", args.mountpoint.display());
    }
    Ok(Outcome::Success)
}

/// Bases the staging area on `spec` (`latest`, an id or `empty`), unless
/// it holds changes on another base: those are never dropped silently.
#[cfg(feature = "fuse")]
fn choose_base(
    repo: &mapache_store::IndexedRepository,
    staging: &mapache_fs::staging::Staging,
    spec: &str,
    filter: &crate::selection::SnapshotFilter,
) -> Result<()> {
    let wanted = match spec {
        "empty" => None,
        spec => Some(filter.find(repo, spec)?.0),
    };
    let current = staging.base();
    if wanted == current {
        return Ok(());
    }
    if !staging.status()?.is_empty() {
        bail!(
            "the staging area holds uncommitted changes on {}: commit them, or drop them with `mapache stage reset --base {spec}`",
            current.map_or("an empty base".into(), |id| format!("snapshot {}", id.short()))
        );
    }
    staging.reset(wanted)?;
    Ok(())
}

#[cfg(not(feature = "fuse"))]
pub fn run(_global: &GlobalOptions, args: Args) -> Result<Outcome> {
    check_mountpoint(&args.mountpoint)?;
    bail!("this mapache was built without FUSE support (feature `fuse`), so it cannot mount")
}
