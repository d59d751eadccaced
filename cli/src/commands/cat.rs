//! `mapache cat`

use std::io::Write;

use anyhow::{bail, Result};
use mapache_store::backend::FileKind;
use mapache_store::tree::Tree;
use mapache_store::{BlobId, Id, PackId};

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;
use crate::selection::resolve_prefix;

/// Print a repository object, decrypted: config, key, snapshot, index,
/// pack (its footer), tree, or blob (raw bytes)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to print
    #[arg(value_enum)]
    kind: ObjectKind,

    /// Its id, or a unique prefix of it (for snapshots also `latest`)
    id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ObjectKind {
    Config,
    Key,
    Snapshot,
    Index,
    Pack,
    Tree,
    Blob,
}

fn hex_or_text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap_or_else(|_| format!("hex:{}", hex_encode(bytes)))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tree_json(tree: &Tree) -> serde_json::Value {
    let nodes: Vec<_> = tree
        .nodes
        .iter()
        .map(|n| {
            let mut value = serde_json::to_value(n).expect("serializable");
            value["name"] = serde_json::Value::String(hex_or_text(&n.name));
            value["link_target"] = serde_json::Value::String(hex_or_text(&n.link_target));
            value["xattrs"] = n
                .xattrs
                .iter()
                .map(|(k, v)| serde_json::json!([hex_or_text(k), hex_or_text(v)]))
                .collect();
            value
        })
        .collect();
    serde_json::json!({ "nodes": nodes })
}

/// The indexed blob of `blob_type` whose id starts with `spec`.
fn blob_by_prefix(
    repo: &mapache_store::IndexedRepository,
    spec: &str,
    blob_type: mapache_store::BlobType,
) -> Result<BlobId> {
    let index = repo.index();
    let candidates = index
        .iter()
        .filter(|(_, l)| l.blob_type == blob_type)
        .map(|(id, _)| id);
    let what = match blob_type {
        mapache_store::BlobType::Tree => "tree",
        mapache_store::BlobType::Data => "blob",
    };
    resolve_prefix(spec, candidates, what)
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let repo = global.open()?;
    let id_arg = || -> Result<&str> {
        match &args.id {
            Some(id) => Ok(id.as_str()),
            None => bail!("`cat {:?}` needs an id", args.kind),
        }
    };
    match args.kind {
        ObjectKind::Config => print_json(repo.config())?,
        ObjectKind::Key => {
            let keys = repo
                .backend()
                .list(FileKind::Key)?
                .into_iter()
                .map(|f| f.id);
            let id: Id = resolve_prefix(id_arg()?, keys, "key")?;
            print_json(&mapache_store::key_file_json(repo.backend().as_ref(), &id)?)?
        }
        ObjectKind::Snapshot => {
            let (id, snapshot) = repo.find_snapshot(id_arg()?)?;
            let mut value = serde_json::to_value(&snapshot)?;
            value["id"] = serde_json::Value::String(id.to_hex());
            print_json(&value)?
        }
        ObjectKind::Index => {
            let files = repo
                .backend()
                .list(FileKind::Index)?
                .into_iter()
                .map(|f| f.id);
            let id: Id = resolve_prefix(id_arg()?, files, "index file")?;
            let file = repo.load_index_file(&id)?;
            let packs: Vec<_> = file
                .packs
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": p.id.to_hex(),
                        "type": format!("{:?}", p.blob_type).to_lowercase(),
                        "blobs": p.blobs.iter().map(|b| serde_json::json!({
                            "id": b.id.to_hex(), "offset": b.offset, "length": b.length, "raw_length": b.raw_length,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let supersedes: Vec<_> = file.supersedes.iter().map(Id::to_hex).collect();
            print_json(&serde_json::json!({ "supersedes": supersedes, "packs": packs }))?
        }
        ObjectKind::Pack => {
            let packs = repo
                .backend()
                .list(FileKind::Pack)?
                .into_iter()
                .map(|f| PackId(f.id));
            let id: PackId = resolve_prefix(id_arg()?, packs, "pack")?;
            let data = repo.backend().read(FileKind::Pack, &id.0)?;
            if Id::hash_of(&data) != id.0 {
                return Err(mapache_store::Error::integrity(
                    FileKind::Pack,
                    id,
                    "content does not match its name",
                )
                .into());
            }
            let (blob_type, blobs) = repo.pack_footer(&id, &data)?;
            let blobs: Vec<_> = blobs
                .iter()
                .map(|b| serde_json::json!({"id": b.id.to_hex(), "offset": b.offset, "length": b.length, "raw_length": b.raw_length}))
                .collect();
            print_json(&serde_json::json!({
                "id": id.to_hex(), "size": data.len(), "type": format!("{blob_type:?}").to_lowercase(), "blobs": blobs,
            }))?
        }
        ObjectKind::Tree => {
            let repo = repo.load_index()?;
            let id = blob_by_prefix(&repo, id_arg()?, mapache_store::BlobType::Tree)?;
            print_json(&tree_json(&repo.load_tree(&id)?))?
        }
        ObjectKind::Blob => {
            let repo = repo.load_index()?;
            let id = blob_by_prefix(&repo, id_arg()?, mapache_store::BlobType::Data)?;
            let data = repo.read_blob(&id)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(Outcome::Success)
}
