//! `store key list | add | remove | passwd`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::{KdfArgs, KeyCommand};
use crate::output::{out, summary};

/// The KDF cost the options ask for, checked against the bounds a key file may have.
pub fn kdf_params(args: &KdfArgs) -> Result<store::crypto::KdfParams> {
    let params = store::crypto::KdfParams {
        memory_kib: args.kdf_memory.saturating_mul(1024),
        iterations: args.kdf_iterations,
        parallelism: store::crypto::KdfParams::DEFAULT.parallelism,
    };
    params.validate().map_err(|e| {
        anyhow::anyhow!(
            "invalid --kdf-memory {} / --kdf-iterations {}: {e}",
            args.kdf_memory,
            args.kdf_iterations
        )
    })?;
    Ok(params)
}

pub fn run(repo_arg: &RepoArg, command: &KeyCommand) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    if !repo.config().is_encrypted() {
        anyhow::bail!(
            "{} is not encrypted: it has no keys (make an encrypted repository with `store init` \
             and move the sets with `store copy`)",
            repo.storage().location()
        );
    }
    match command {
        KeyCommand::List(args) => {
            let keys = repo.list_keys().context("listing the keys")?;
            if args.json {
                let list: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| match &k.key {
                        Ok(key) => serde_json::json!({
                            "id": k.id.to_hex(),
                            "current": k.current,
                            "created": crate::output::time_rfc3339(key.created_ns),
                            "kdf": {"algorithm": "argon2id", "memory_kib": key.kdf.memory_kib,
                                    "iterations": key.kdf.iterations,
                                    "parallelism": key.kdf.parallelism},
                        }),
                        Err(e) => serde_json::json!({
                            "id": k.id.to_hex(), "current": false, "error": e.to_string(),
                        }),
                    })
                    .collect();
                print_json(&serde_json::Value::Array(list))?;
            } else {
                for k in &keys {
                    let mark = if k.current { "*" } else { " " };
                    match &k.key {
                        Ok(key) => out!(
                            "{mark} {}  created {}  argon2id {} MiB, {} passes, {} lanes",
                            k.id.short(),
                            crate::output::time_rfc3339(key.created_ns),
                            key.kdf.memory_kib >> 10,
                            key.kdf.iterations,
                            key.kdf.parallelism
                        ),
                        Err(e) => out!("{mark} {}  damaged: {e}", k.id.short()),
                    }
                }
            }
        }
        KeyCommand::Add(args) => {
            let password = crate::password::for_new_key(args.new_password_file.as_deref())?;
            let id = repo.add_key(&password, kdf_params(&args.kdf)?).context("adding the key")?;
            summary!("added key {}", id.short());
        }
        KeyCommand::Remove(args) => {
            // Exclusive: two removals at once must not leave the repository without a key.
            let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "key remove", false)?;
            let id = repo.resolve_key(&args.id)?;
            repo.remove_key(id).context("removing the key")?;
            summary!("removed key {}", id.short());
        }
        KeyCommand::Passwd(args) => {
            let password = crate::password::for_new_key(args.new_password_file.as_deref())?;
            let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "key passwd", false)?;
            let id = repo
                .change_password(&password, kdf_params(&args.kdf)?)
                .context("changing the password")?;
            summary!("password changed: key {} replaces the one in use", id.short());
        }
    }
    Ok(ExitCode::SUCCESS)
}
