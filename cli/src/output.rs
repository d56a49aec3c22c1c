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

/// Throughput in MB/s (decimal, as benchmarks report it).
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0} MB/s", bytes as f64 / 1e6 / secs)
}

/// Nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ns.to_string())
}

/// Nanoseconds since the epoch as RFC 3339 (for JSON).
pub fn time_rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}

/// Parses a size such as `16MiB`, `512K`, `1048576`.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => anyhow::bail!("invalid size unit in {s:?} (use B, KiB, MiB or GiB)"),
    };
    n.checked_mul(mult).ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

/// Parses a duration such as `30s`, `10m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("invalid duration unit in {s:?} (use s, m, h or d)"),
    };
    Ok(std::time::Duration::from_secs(secs))
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
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert!(parse_duration("soon").is_err());
    }
}
