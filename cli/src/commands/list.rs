//! `mapache list`

use anyhow::Result;
use mapache_store::backend::FileKind;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;

/// List the ids of one kind of repository file
///
/// What `cat` takes: `mapache list packs`, then `mapache cat pack ID`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// snapshots, index, packs, keys, locks, forgotten or staging
    kind: Kind,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Snapshots,
    Index,
    Packs,
    Keys,
    Locks,
    Forgotten,
    Staging,
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let kind = match args.kind {
        Kind::Snapshots => FileKind::Snapshot,
        Kind::Index => FileKind::Index,
        Kind::Packs => FileKind::Pack,
        Kind::Keys => FileKind::Key,
        Kind::Locks => FileKind::Lock,
        Kind::Forgotten => FileKind::Forgotten,
        Kind::Staging => FileKind::Staging,
    };
    let mut files = repo.backend().list(kind)?;
    files.sort_by_key(|f| f.id);
    if global.json {
        let list: Vec<_> = files
            .iter()
            .map(|f| serde_json::json!({ "id": f.id.to_hex(), "size": f.size }))
            .collect();
        print_json(&list)?;
    } else {
        let mut out = std::io::stdout().lock();
        for file in &files {
            std::io::Write::write_fmt(&mut out, format_args!("{}\n", file.id))?;
        }
    }
    Ok(Outcome::Success)
}
