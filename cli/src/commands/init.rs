//! `store init`.

use crate::output::summary;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{print_json, RepoArg};
use crate::args::InitArgs;
use crate::output::parse_size;

fn parse_chunk_sizes(s: &str) -> Result<store::ChunkSizes> {
    let parts: Vec<&str> = s.split('/').collect();
    let [min, avg, max] = parts.as_slice() else {
        bail!("invalid --chunk-sizes {s:?}: expected MIN/AVG/MAX, for example 256KiB/1MiB/4MiB");
    };
    let to_u32 = |v: &str| -> Result<u32> {
        u32::try_from(parse_size(v)?).with_context(|| format!("chunk size {v:?} is too large"))
    };
    Ok(store::ChunkSizes { min: to_u32(min)?, avg: to_u32(avg)?, max: to_u32(max)? })
}

/// The name `--encryption` takes for `e`.
fn encryption_name(e: store::Encryption) -> &'static str {
    match e {
        store::Encryption::None => "none",
        store::Encryption::XChaCha20Poly1305 => "xchacha20-poly1305",
        store::Encryption::Xaes256Gcm => "xaes-256-gcm",
    }
}

pub fn run(repo: &RepoArg, args: &InitArgs) -> Result<ExitCode> {
    let location = repo.location()?;
    let chunk_sizes = parse_chunk_sizes(&args.chunk_sizes)
        .with_context(|| format!("invalid --chunk-sizes {:?}", args.chunk_sizes))?;
    let s = &args.pack_size;
    let pack_target =
        u32::try_from(parse_size(s).with_context(|| format!("invalid --pack-size {s:?}"))?)
            .with_context(|| format!("--pack-size {s:?} is too large"))?;
    let encrypt = match args.encryption.as_deref() {
        Some(mode) => mode != "none",
        None => args.format_version >= 3,
    };
    let encryption = if !encrypt {
        None
    } else {
        if args.format_version < 3 {
            bail!(
                "format version {} cannot be encrypted: use --encryption none with it",
                args.format_version
            );
        }
        let cipher = [store::Encryption::XChaCha20Poly1305, store::Encryption::Xaes256Gcm]
            .into_iter()
            .find(|&e| args.encryption.as_deref() == Some(encryption_name(e)));
        if let Some(c) = cipher.filter(|c| c.since_version() > args.format_version) {
            bail!(
                "--encryption {} needs format version {} or later (--format-version {})",
                args.encryption.as_deref().unwrap_or_default(),
                c.since_version(),
                args.format_version
            );
        }
        let password = crate::password::for_init(repo.password_file())?;
        Some(store::NewKey { password, kdf: super::key::kdf_params(&args.kdf)?, cipher })
    };
    let opts = store::InitOptions {
        chunk_sizes: Some(chunk_sizes),
        compression_level: Some(args.compression_level),
        pack_target: Some(pack_target),
        format_version: Some(args.format_version),
        encryption,
    };
    let repo = store::Repository::init_at(&location, &opts, repo.cache_dir())
        .context("cannot create the repository")?;
    let c = repo.config();
    if args.json {
        print_json(&serde_json::json!({
            "path": location.to_string(),
            "repo_id": c.repo_id.to_hex(),
            "format_version": c.version,
            "chunk_min": c.chunker.min,
            "chunk_avg": c.chunker.avg,
            "chunk_max": c.chunker.max,
            "compression_level": c.compression_level,
            "pack_size": c.pack_target,
            "encrypted": c.is_encrypted(),
            "encryption": encryption_name(c.encryption),
        }))?;
    } else {
        summary!(
            "created store repository {} at {} (format version {}, {})",
            c.repo_id.short(),
            location,
            c.version,
            match c.encryption {
                store::Encryption::None => "not encrypted".to_owned(),
                e => format!("encrypted with {}", encryption_name(e)),
            }
        );
        if c.is_encrypted() {
            summary!(
                "keep the password safe: without it (or another key, `store key add`) no set in \
                 this repository can be read"
            );
        } else {
            summary!(
                "this repository is not encrypted: anyone who can read its files can read every \
                 set"
            );
        }
        if c.version < 2 {
            summary!(
                "format version {} keeps no extended attributes, ACLs or hard links, and times \
                 only from 1677 to 2262",
                c.version
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
