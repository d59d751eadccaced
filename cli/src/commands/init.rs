//! `mapache init`

use anyhow::Result;
use mapache_store::ChunkerParams;
use mapache_store::Config;
use mapache_store::KdfParams;
use mapache_store::Repository;

use crate::exit::Outcome;
use crate::global::GlobalOptions;
use crate::output::print_json;
use crate::password;

/// Create a new repository
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Argon2id memory cost in KiB (default 65536 = 64 MiB). Lower values
    /// make the password cheaper to attack; use them only for tests.
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::default().memory_kib)]
    kdf_memory: u32,

    /// Argon2id passes (default 3)
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().iterations)]
    kdf_iterations: u32,

    /// Target pack file size in MiB
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pack_size: u32,

    /// zstd compression level for blobs (0 = no compression)
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = 3,
        allow_negative_numbers = true
    )]
    compression: i32,

    /// Minimum, average and maximum chunk size in KiB, e.g. 512,1024,8192
    #[arg(long, value_name = "MIN,AVG,MAX", value_parser = parse_chunk_sizes)]
    chunk_sizes: Option<ChunkerParams>,
}

fn parse_chunk_sizes(text: &str) -> Result<ChunkerParams, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [min, avg, max] = parts[..] else {
        return Err("expected three sizes: MIN,AVG,MAX (KiB)".into());
    };
    let params = ChunkerParams {
        min_size: min * 1024,
        avg_size: avg * 1024,
        max_size: max * 1024,
    };
    params.validate()?;
    Ok(params)
}

pub fn run(global: &GlobalOptions, args: Args) -> Result<Outcome> {
    let backend = global.backend()?;
    if backend.is_repository()? {
        return Err(mapache_store::Error::RepositoryExists(backend.location()).into());
    }
    if !(1..=4096).contains(&args.pack_size) {
        anyhow::bail!("--pack-size must be between 1 and 4096 MiB");
    }
    let kdf = KdfParams {
        memory_kib: args.kdf_memory,
        iterations: args.kdf_iterations,
        parallelism: 1,
    };
    kdf.validate()
        .map_err(|e| anyhow::anyhow!("--kdf-memory/--kdf-iterations: {e}"))?;
    let password = password::read(&global.password_source(), true)?;
    let mut config = Config::new();
    config.pack_size = args.pack_size * 1024 * 1024;
    config.compression_level = args.compression;
    if let Some(chunker) = args.chunk_sizes {
        config.chunker = chunker;
    }
    let repo = Repository::init(backend.clone(), password.as_bytes(), kdf, config)?;
    if global.json {
        print_json(&serde_json::json!({
            "id": repo.config().id.to_hex(),
            "location": backend.location(),
        }))?;
    } else if !global.quiet {
        println!(
            "created repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        println!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(Outcome::Success)
}
