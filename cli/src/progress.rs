//! Progress bars on a terminal (indicatif), implementing the engine's `Progress`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte progress bar on stderr, hidden when stderr is not a terminal.
pub struct Bar {
    bar: ProgressBar,
    issues: AtomicU64,
}

impl Bar {
    /// A bar for work of unknown size until `set_total` is called.
    fn new(verb: &str) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {verb} {{msg}} {{bytes}} ({{binary_bytes_per_sec}}) {{elapsed}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar { bar, issues: AtomicU64::new(0) }
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

    fn set_total(&self, _items: u64, bytes: u64) {
        self.bar.set_length(bytes);
        let template = "{msg} [{bar:25}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }

    fn add_bytes(&self, n: u64) {
        self.bar.inc(n);
    }

    fn interrupted(&self) -> bool {
        crate::signals::interrupted()
    }

    fn issue(&self, issue: &store::PathIssue) {
        self.issues.fetch_add(1, Ordering::Relaxed);
        let what = match issue.kind {
            store::IssueKind::Skipped => "not backed up",
            store::IssueKind::Changed => "changed while read",
        };
        self.bar.suspend(|| {
            eprintln!(
                "store: warning: {}/{}: {what}: {}",
                issue.component,
                store::escape_name(&issue.path),
                issue.reason
            );
        });
    }
}
