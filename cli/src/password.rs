//! Where passwords come from: `--password-file` / `STORE_PASSWORD_FILE`,
//! `STORE_PASSWORD_COMMAND`, `STORE_PASSWORD`, or a prompt on the terminal. Never a command-line
//! argument (it would show in `ps`), never logged.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use store::crypto::Password;
use zeroize::Zeroize;

/// What the options say when no password source is given.
const SOURCES: &str = "--password-file FILE, STORE_PASSWORD_FILE, STORE_PASSWORD_COMMAND or \
                       STORE_PASSWORD";

/// The first line of `bytes` (without its line end), as a password; `bytes` is wiped.
fn first_line(mut bytes: Vec<u8>) -> Password {
    let end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let mut line = bytes.get(..end).unwrap_or_default().to_vec();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    bytes.zeroize();
    Password::new(line)
}

/// Reads a password file: its first line.
fn from_file(path: &Path) -> Result<Password> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(first_line(bytes))
}

/// Runs `command` (of variable `var`) with `sh -c`: the first line of its output.
fn from_command(var: &str, command: &str) -> Result<Password> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {var} {command:?}"))?;
    if !out.status.success() {
        bail!("{var} {command:?} failed ({})", out.status);
    }
    Ok(first_line(out.stdout))
}

/// Whether a person can be asked: standard input is a terminal and there is one to ask on.
fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_ok()
}

fn prompt(text: &str) -> Result<Password> {
    let line = rpassword::prompt_password(text).context("cannot read the password")?;
    Ok(Password::new(line.into_bytes()))
}

/// The password of an existing repository, from the first source given.
pub fn existing(password_file: Option<&Path>) -> Result<Password> {
    existing_as(password_file, "STORE", "the repository")
}

/// [`existing`] with the variables of `prefix` (`STORE`, or `STORE_FROM` for the source of
/// `store copy`): `{prefix}_PASSWORD_COMMAND`, then `{prefix}_PASSWORD`; `what` names the
/// repository in the prompt and the error.
pub fn existing_as(password_file: Option<&Path>, prefix: &str, what: &str) -> Result<Password> {
    if let Some(path) = password_file {
        return from_file(path);
    }
    let command_var = format!("{prefix}_PASSWORD_COMMAND");
    if let Some(command) = std::env::var_os(&command_var) {
        return from_command(&command_var, &command.to_string_lossy());
    }
    if let Some(text) = std::env::var_os(format!("{prefix}_PASSWORD")) {
        return Ok(Password::new(text.into_encoded_bytes()));
    }
    if can_prompt() {
        return prompt(&format!("password for {what}: "));
    }
    if prefix == "STORE" {
        bail!("{what} is encrypted: give its password with {SOURCES} (no terminal to ask on)")
    }
    bail!(
        "{what} is encrypted: give its password with --{}-password-file FILE, {prefix}_PASSWORD_FILE, \
         {prefix}_PASSWORD_COMMAND or {prefix}_PASSWORD (no terminal to ask on)",
        prefix.trim_start_matches("STORE_").to_lowercase()
    )
}

/// The password [`existing_as`] would give when it needs neither a command nor a person
/// (a password file that reads, `{prefix}_PASSWORD`), so that an encrypted repository opens in
/// one go rather than after finding out that it is encrypted; `None` otherwise (and for a file
/// that does not read: an unencrypted repository needs none, and an encrypted one then reports
/// the file through [`existing_as`]).
pub fn given(password_file: Option<&Path>, prefix: &str) -> Option<Password> {
    if let Some(path) = password_file {
        return from_file(path).ok();
    }
    if std::env::var_os(format!("{prefix}_PASSWORD_COMMAND")).is_some() {
        return None;
    }
    let text = std::env::var_os(format!("{prefix}_PASSWORD"))?;
    Some(Password::new(text.into_encoded_bytes()))
}

/// Asks twice for a new password.
fn prompt_twice(what: &str) -> Result<Password> {
    let first = prompt(&format!("{what}: "))?;
    let again = prompt(&format!("{what} again: "))?;
    if !first.same_as(&again) {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn not_empty(password: Password, what: &str) -> Result<Password> {
    if password.is_empty() {
        bail!("an empty {what} is refused");
    }
    Ok(password)
}

/// The password of a new repository: from the sources [`existing`] reads, a prompt asking
/// twice. An empty password is refused.
pub fn for_init(password_file: Option<&Path>) -> Result<Password> {
    let given = password_file.is_some()
        || ["STORE_PASSWORD_COMMAND", "STORE_PASSWORD"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
    let password = if given || !can_prompt() {
        existing(password_file).context(
            "`store init` encrypts the repository with a password (`--encryption none` does not)",
        )?
    } else {
        prompt_twice("password for the new repository")?
    };
    not_empty(password, "password")
}

/// The password of a new key (`key add`, `key passwd`): `--new-password-file`, else
/// `STORE_NEW_PASSWORD`, else a prompt asking twice. An empty password is refused.
pub fn for_new_key(file: Option<&Path>) -> Result<Password> {
    let password = if let Some(path) = file {
        from_file(path)?
    } else if let Some(text) = std::env::var_os("STORE_NEW_PASSWORD") {
        Password::new(text.into_encoded_bytes())
    } else if can_prompt() {
        prompt_twice("new password")?
    } else {
        bail!(
            "no new password given: use --new-password-file FILE or STORE_NEW_PASSWORD (no \
             terminal to ask on)"
        );
    };
    not_empty(password, "new password")
}
