//! The end of a restore: complete files take their names, incomplete ones
//! go, hard links, then metadata, folders deepest first.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::plan::{content_matches, Planner};
use super::{metadata, target, Damaged, PlannedFile, RestoreOptions, RestoreReport};
use crate::error::{Error, Result};
use crate::repository::IndexedRepository;

/// Folders opened below the target, the last one kept: entries of one
/// folder come together.
struct Dirs<'a> {
    root: &'a OwnedFd,
    shown: &'a Path,
    last: Option<(PathBuf, OwnedFd)>,
}

impl Dirs<'_> {
    fn get(&mut self, rel: &Path) -> Result<&OwnedFd> {
        if self.last.as_ref().map(|(p, _)| p.as_path()) != Some(rel) {
            let fd = target::open_beneath(self.root.as_fd(), rel)
                .map_err(|e| Error::io(self.shown.join(rel), e))?;
            self.last = Some((rel.to_path_buf(), fd));
        }
        Ok(&self.last.as_ref().expect("just opened").1)
    }
}

/// What finishing a run of files found.
#[derive(Default)]
struct Finished {
    verified: u64,
    damaged: Vec<String>,
    conflicts: Vec<String>,
    warnings: Vec<String>,
}

/// Gives each complete file of `files` (numbered from `first`) its
/// metadata and its name; removes and names the incomplete ones.
fn finish_files(
    repo: &IndexedRepository,
    options: &RestoreOptions,
    shown: &Path,
    root: &OwnedFd,
    files: &[PlannedFile],
    first: u32,
    damaged: &Damaged,
) -> Result<Finished> {
    let mut dirs = Dirs {
        root,
        shown,
        last: None,
    };
    let mut out = Finished::default();
    for (number, file) in (first..).zip(files) {
        let place = &file.place;
        let show = place.show(shown);
        let dir = dirs.get(&place.dir)?.as_fd();
        if !file.writing {
            // Found right by reading it blob by blob while planning.
            if options.verify {
                out.verified += 1;
            }
            metadata::apply_file(dir, &place.name, &file.node, &show, &mut out.warnings);
            continue;
        }
        let temp = target::temp_name(&place.name);
        // An incomplete file never takes its name: whatever was there stays.
        if let Some(reason) = damaged.get(&number) {
            let _ = target::remove(dir, &temp, false);
            out.damaged.push(format!("{show}: {reason}"));
            continue;
        }
        if options.verify {
            match content_matches(repo, dir, &temp, &file.node) {
                Ok(true) => out.verified += 1,
                outcome => {
                    let _ = target::remove(dir, &temp, false);
                    let why = match outcome {
                        Err(e) => e.to_string(),
                        _ => "content differs".into(),
                    };
                    out.damaged
                        .push(format!("{show}: verification failed: {why}"));
                    continue;
                }
            }
        }
        match target::open_for_reading(dir, &temp) {
            Ok(handle) => metadata::apply_open(&handle, &file.node, &show, &mut out.warnings),
            Err(e) => out
                .warnings
                .push(format!("{show}: cannot set metadata: {e}")),
        }
        if let Err(e) = target::rename(dir, &temp, &place.name) {
            let _ = target::remove(dir, &temp, false);
            out.conflicts
                .push(format!("{show}: cannot take its name: {e}"));
        }
    }
    Ok(out)
}

pub(super) fn finish(planner: Planner<'_>, root: &OwnedFd) -> Result<RestoreReport> {
    let Planner {
        repo,
        options,
        root: shown,
        mut report,
        files,
        others,
        dirs: folders,
        hard_links,
        damaged,
        ..
    } = planner;
    let mut dirs = Dirs {
        root,
        shown,
        last: None,
    };
    let mut warnings = Vec::new();
    // Files are finished on several threads, each a run of neighbours (one
    // folder's files stay together): opening each for its metadata and the
    // rename cost round trips to the file system that overlap well.
    let threads = options.threads.max(1) * 2;
    let chunk = files.len().div_ceil(threads).max(1);
    let outcomes: Vec<Result<Finished>> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                let first = (n * chunk) as u32;
                let damaged = &damaged;
                scope.spawn(move || finish_files(repo, options, shown, root, part, first, damaged))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("finishing thread panicked"))
            .collect()
    });
    for outcome in outcomes {
        let finished = outcome?;
        report.verified += finished.verified;
        report.damaged.extend(finished.damaged);
        report.conflicts.extend(finished.conflicts);
        warnings.extend(finished.warnings);
    }
    for (first, link) in &hard_links {
        let show = link.show(shown);
        let first_dir = dirs
            .get(&first.dir)?
            .try_clone()
            .map_err(|e| Error::io(shown, e))?;
        let link_dir = dirs.get(&link.dir)?.as_fd();
        match target::existing(link_dir, &link.name) {
            Ok(target::Existing::Absent) => {}
            Ok(target::Existing::Dir) => {
                report.conflicts.push(format!(
                    "{show}: a folder is where the snapshot has a hard link; left alone"
                ));
                continue;
            }
            _ if options.overwrite == super::Overwrite::Never => continue,
            _ => {
                let _ = target::remove(link_dir, &link.name, false);
            }
        }
        if let Err(e) = target::hard_link(first_dir.as_fd(), &first.name, link_dir, &link.name) {
            warnings.push(format!("{show}: cannot link to {}: {e}", first.show(shown)));
        }
    }
    for (place, node) in &others {
        let dir = dirs.get(&place.dir)?.as_fd();
        metadata::apply_at(dir, &place.name, node, &place.show(shown), &mut warnings);
    }
    // Children were pushed before their parents: this is deepest first.
    for (rel, node) in &folders {
        let show = shown.join(rel).display().to_string();
        match target::open_beneath(root.as_fd(), rel) {
            Ok(fd) => metadata::apply_open(&File::from(fd), node, &show, &mut warnings),
            Err(e) => warnings.push(format!("{show}: cannot set metadata: {e}")),
        }
    }
    report.warnings.extend(warnings);
    Ok(report)
}
