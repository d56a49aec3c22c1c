//! Progress bars on a terminal (indicatif), implementing the engine's `Progress`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte progress bar on stderr, hidden when stderr is not a terminal (and under `-q`).
///
/// While the amount of work is unknown (a `--component-cmd` stream, a component still being
/// counted) it shows what was done and the rate; once known, a bar with files and bytes done of
/// the total, rate and ETA. Each line starts with the command (`snapshot`, `restore`, `check`,
/// `prune`) and the phase (a component's name, `repacking 3f2a...`).
pub struct Bar {
    bar: ProgressBar,
    verb: String,
    /// What the items counted are: files (snapshot, restore) or packs (check, prune, repair).
    unit: &'static str,
    issues: AtomicU64,
    files: AtomicU64,
    files_total: AtomicU64,
}

impl Bar {
    /// A bar for work of unknown size until `set_total` is called.
    fn new(verb: &str) -> Self {
        let bar = if std::io::stderr().is_terminal() && !crate::output::quiet() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let b = Bar {
            bar,
            verb: verb.to_owned(),
            unit: if matches!(verb, "snapshot" | "restore" | "dry run") {
                "files"
            } else {
                "packs"
            },
            issues: AtomicU64::new(0),
            files: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
        };
        b.unknown_total();
        b.bar.enable_steady_tick(Duration::from_millis(200));
        b
    }

    /// The look for work of unknown size: what was done, and the rate.
    fn unknown_total(&self) {
        let template = format!(
            "{{spinner}} {} {{msg}} {{prefix}}{{binary_bytes}} ({{binary_bytes_per_sec}}), {{elapsed}}",
            self.verb
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            self.bar.set_style(style);
        }
    }

    /// Runs `work` with a bar for `verb`, removing the bar afterwards whatever the outcome.
    pub fn run<T>(verb: &str, work: impl FnOnce(&Bar) -> T) -> T {
        let bar = Bar::new(verb);
        let result = work(&bar);
        bar.finish();
        result
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Source paths reported as not backed up as they were.
    pub fn issues(&self) -> u64 {
        self.issues.load(Ordering::Relaxed)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl store::Progress for Bar {
    fn phase(&self, name: &str) {
        self.bar.set_message(name.to_owned());
    }

    /// `0, 0`: new work of unknown size starts (counted from 0); otherwise the size of the work
    /// under way is now known (what was done so far counts).
    fn set_total(&self, items: u64, bytes: u64) {
        if self.bar.is_hidden() {
            return;
        }
        self.files_total.store(items, Ordering::Relaxed);
        if items == 0 && bytes == 0 {
            self.files.store(0, Ordering::Relaxed);
            self.bar.set_prefix("");
            self.bar.set_position(0);
            self.bar.unset_length();
            self.unknown_total();
            return;
        }
        self.bar.set_length(bytes);
        let template = format!(
            "{} {{msg}} [{{bar:25}}] {{prefix}}{{binary_bytes}}/{{binary_total_bytes}} \
             {{binary_bytes_per_sec}}, ETA {{eta}}",
            self.verb
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }

    fn add_items(&self, n: u64) {
        if self.bar.is_hidden() {
            return;
        }
        let done = self.files.fetch_add(n, Ordering::Relaxed) + n;
        let total = self.files_total.load(Ordering::Relaxed);
        self.bar.set_prefix(if total > 0 {
            format!("{done}/{total} {}, ", self.unit)
        } else {
            format!("{done} {}, ", self.unit)
        });
    }

    fn add_bytes(&self, n: u64) {
        self.bar.inc(n);
    }

    fn interrupted(&self) -> bool {
        crate::signals::interrupted()
    }

    fn wants_files(&self) -> bool {
        crate::output::verbose()
    }

    /// `-v`: one line per file on stdout (`new      content/2026/11/x.bin`), or on stderr when
    /// stdout carries a JSON document.
    fn file(&self, component: &str, path: &[u8], what: store::FileEvent) {
        let what = match what {
            store::FileEvent::New => "new",
            store::FileEvent::Changed => "changed",
            store::FileEvent::Unchanged => "unchanged",
            store::FileEvent::Excluded => "excluded",
            store::FileEvent::Restored => "restored",
        };
        // A restore's path is already escaped text; a snapshot's is raw bytes.
        let (path, sep) = if component.is_empty() {
            (String::from_utf8_lossy(path).into_owned(), "")
        } else {
            (store::escape_name(path), "/")
        };
        self.bar.suspend(|| {
            if crate::output::json() {
                crate::output::stderr!("{what:<9} {component}{sep}{path}");
            } else {
                let _ = crate::output::write_line(format_args!("{what:<9} {component}{sep}{path}"));
            }
        });
    }

    fn issue(&self, issue: &store::PathIssue) {
        self.issues.fetch_add(1, Ordering::Relaxed);
        let what = match issue.kind {
            store::IssueKind::Skipped => "not backed up",
            store::IssueKind::Changed => "changed while read",
            store::IssueKind::Incomplete => "kept without some metadata",
        };
        self.bar.suspend(|| {
            crate::output::stderr!(
                "store: warning: {}/{}: {what}: {}",
                issue.component,
                store::escape_name(&issue.path),
                issue.reason
            );
        });
    }
}
