//! Rendering for people: sizes, rates, times; and the command output on stdout.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a reader of our stdout went away.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line of command output (a report line, a summary) to stdout. A reader that went
/// away (`store check | head -1`) is not an error and never a panic: the rest of the output is
/// dropped, and the command runs to its end and exits with its own status (a damaged
/// repository still exits 1, a committed set is still committed).
///
/// # Errors
/// Any other write error (a full disk under a redirected stdout).
pub fn write_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// `println!` for command output, through [`write_line`]; `?`s its error.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// `-q`: errors only. `-v`: each file named.
static QUIET: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets `-q` and `-v` for the whole command.
pub fn set_verbosity(quiet: bool, verbose: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// The command prints one JSON document on stdout (`--json`): what else it says goes to stderr.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether stdout carries a JSON document.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Whether `-q` was given: no progress, summaries, notes or warnings.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether `-v` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// A command's closing summary on stdout (what it did, for people): dropped under `-q`, so cron
/// mails nothing when all went well (the `--log-file` still gets it). `?`s a write error.
macro_rules! summary {
    ($($arg:tt)*) => {{
        // The log keeps it under `-q` too: a cron job's log says what each run did.
        let line = format!($($arg)*);
        $crate::output::log(&line);
        if !$crate::output::quiet() {
            $crate::output::write_line(format_args!("{line}"))?
        }
    }};
}
pub(crate) use summary;

/// A warning or note on stderr (`store: warning: ...`): dropped under `-q` (the `--log-file`
/// still gets it).
macro_rules! warning {
    ($($arg:tt)*) => {{
        let line = format!("store: warning: {}", format_args!($($arg)*));
        $crate::output::log(&line);
        if !$crate::output::quiet() {
            eprintln!("{line}");
        }
    }};
}
pub(crate) use warning;

/// A line on stderr (an error, a warning, a path that could not be handled), also appended to
/// the `--log-file`.
macro_rules! stderr {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        $crate::output::log(&line);
        eprintln!("{line}");
    }};
}
pub(crate) use stderr;

/// The `--log-file`, once opened: the file and the command it logs for.
static LOG: std::sync::Mutex<Option<(std::fs::File, String)>> = std::sync::Mutex::new(None);

/// Opens `path` for appending (created 0600 when missing) as the log of `command`.
///
/// # Errors
/// The file cannot be opened.
pub fn open_log(path: &std::path::Path, command: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    if let Ok(mut log) = LOG.lock() {
        *log = Some((file, command.to_owned()));
    }
    Ok(())
}

/// Whether a log file is open.
pub fn logging() -> bool {
    LOG.lock().is_ok_and(|l| l.is_some())
}

/// Appends `line` to the log file, if one is open, as `TIME store[PID] COMMAND: line` (UTC,
/// RFC 3339); one write per line, so lines of concurrent runs do not interleave within a line.
/// A log that cannot be written is not worth failing a backup for: the error is ignored.
pub fn log(line: &str) {
    let Ok(mut guard) = LOG.lock() else { return };
    let Some((file, command)) = guard.as_mut() else { return };
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut text = String::new();
    for l in line.lines() {
        text.push_str(&format!("{now} store[{}] {command}: {l}\n", std::process::id()));
    }
    let _ = file.write_all(text.as_bytes());
}

/// `text` for one line of a terminal: control characters (newlines, escape sequences of a
/// crafted note or host name) shown escaped, as `\n` or `\u{1b}`.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect()
}

/// `n` bytes as a human size (binary units).
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Throughput in binary units, as sizes and the progress bar show them (`123 MiB/s`).
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", size((bytes as f64 / secs) as u64))
}

/// Nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ns.to_string())
}

/// A file's time as `YYYY-MM-DD HH:MM:SS` UTC (seconds since the epoch beyond year 9999).
pub fn file_time(t: store::Time) -> String {
    file_timestamp(t)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| t.secs.to_string())
}

/// A file's time as RFC 3339 with its nanoseconds (for JSON).
pub fn file_time_rfc3339(t: store::Time) -> String {
    file_timestamp(t).map(|t| t.to_string()).unwrap_or_else(|| t.secs.to_string())
}

fn file_timestamp(t: store::Time) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs, i32::try_from(t.nanos).ok()?).ok()
}

/// Nanoseconds since the epoch as RFC 3339 (for JSON).
pub fn time_rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}

/// Parses a size: a number (decimals allowed) and a unit. Binary units are powers of 1024
/// (`KiB`, `MiB`, `GiB`, `TiB`, and the bare letters `K`, `M`, `G`, `T`); decimal ones powers of
/// 1000 (`KB`, `MB`, `GB`, `TB`), as `df -H` and disk vendors count; no unit or `B` is bytes.
/// `1.5GiB`, `500MB`, `16MiB`, `4096`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => anyhow::bail!(
            "invalid size unit in {s:?} (use B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB for powers \
             of 1000)"
        ),
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let invalid = || anyhow::anyhow!("invalid size {s:?}");
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 12 {
        return Err(invalid());
    }
    let too_large = || anyhow::anyhow!("size {s:?} is too large");
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let mut bytes = whole.checked_mul(mult).ok_or_else(too_large)?;
    if !frac.is_empty() {
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| invalid())?);
        let part = u128::from(frac.parse::<u64>().map_err(|_| invalid())?) * u128::from(mult);
        if part % scale != 0 {
            anyhow::bail!("size {s:?} is not a whole number of bytes");
        }
        let part = u64::try_from(part / scale).map_err(|_| too_large())?;
        bytes = bytes.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

/// Parses a fixed-length duration: `30s`, `10m`, `1h30m`, `2d`, `1w` (a day is 24 hours), or
/// plain seconds (`90`). Years and months have no fixed length: refused, with a message.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs = t.parse().map_err(|_| anyhow::anyhow!("duration {s:?} is too large"))?;
        return Ok(std::time::Duration::from_secs(secs));
    }
    let span = parse_span(s)?;
    let fixed = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|_| {
        anyhow::anyhow!(
            "duration {s:?}: years and months have no fixed length; use w, d, h, m or s"
        )
    })?;
    std::time::Duration::try_from(fixed).map_err(|_| anyhow::anyhow!("duration {s:?} is negative"))
}

/// Parses a calendar span: `36h`, `2w`, `1y6mo` (years and months count on the calendar).
pub fn parse_span(s: &str) -> anyhow::Result<jiff::Span> {
    let span: jiff::Span = s.trim().parse().map_err(|e| {
        anyhow::anyhow!("invalid duration {s:?} ({e}); for example 90s, 10m, 1h30m, 2d, 1w, 1y")
    })?;
    if span.is_negative() {
        anyhow::bail!("duration {s:?} is negative");
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_render() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("256k").unwrap(), 256 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10), "10 B");
        // One unit system: rates in the binary units of sizes and of the progress bar.
        assert_eq!(rate(3 << 20, 2.0), "1.5 MiB/s");
        assert_eq!(rate(0, 0.0), "-");
    }

    // See: issue 13 ("sizes with decimals and TiB, and MB kept distinct from MiB").
    #[test]
    fn sizes_take_decimals_tib_and_keep_mb_apart_from_mib() {
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("0.5KiB").unwrap(), 512);
        assert_eq!(parse_size(".25MB").unwrap(), 250_000);
        assert!(parse_size("0.3B").unwrap_err().to_string().contains("whole number"));
        assert!(parse_size("99999999999TiB").unwrap_err().to_string().contains("too large"));
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size(".").is_err());
        assert!(parse_size("12 PiB").is_err());
    }

    // See: issue 13 ("durations (`1h30m`, `2w`, `1y`, checked for overflow)").
    #[test]
    fn durations_take_compound_units_and_refuse_what_has_no_fixed_length() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 86_400);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
        assert!(parse_duration("1y").unwrap_err().to_string().contains("no fixed length"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_span("-2d").is_err());
        assert_eq!(parse_span("1y6mo").unwrap().get_months(), 6);
    }
}
