//! Glob patterns of `snapshot --exclude` and `restore --include/--exclude`.
//!
//! A pattern without `/` matches an entry's name at any depth (`*.tmp`, `index`); a pattern with
//! `/` matches the whole path (below the component root for snapshot, from the component name
//! for restore: `solr4/index`, `content/2026/11/**`). A leading `/` anchors the pattern to that
//! root, as in restic and rsync: `/cache` is only the `cache` directly below it, never a
//! `cache` deeper down. A trailing `/` is ignored. `*` and `?` never match `/`; `**` matches any
//! number of directories.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled patterns, and which of them matched something so far.
#[derive(Debug)]
pub(crate) struct Patterns {
    names: GlobSet,
    paths: GlobSet,
    empty: bool,
    /// The patterns as given, in order.
    given: Vec<String>,
    /// For each glob of `names`, then of `paths`: its index in `given`.
    name_src: Vec<usize>,
    path_src: Vec<usize>,
    /// Per pattern of `given`: whether it matched an entry.
    used: Vec<std::sync::atomic::AtomicBool>,
}

impl Patterns {
    /// Compiles `patterns`; errors name `option`.
    pub(crate) fn new(patterns: &[String], option: &'static str) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut name_src, mut path_src) = (Vec::new(), Vec::new());
        for (i, p) in patterns.iter().enumerate() {
            let trimmed = p.trim_start_matches('/').trim_end_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidOption { option, reason: format!("{p:?}: {e}") })?;
            if p.starts_with('/') || trimmed.contains('/') {
                paths.add(glob);
                path_src.push(i);
            } else {
                names.add(glob);
                name_src.push(i);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| Error::InvalidOption { option, reason: e.to_string() })
        };
        Ok(Patterns {
            names: build(names)?,
            paths: build(paths)?,
            empty: patterns.is_empty(),
            given: patterns.to_vec(),
            name_src,
            path_src,
            used: patterns.iter().map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
        })
    }

    /// The patterns that matched nothing so far (one likely misspelt, or anchored wrongly).
    pub(crate) fn unmatched(&self) -> Vec<String> {
        let used = |i: usize| {
            self.used.get(i).is_some_and(|u| u.load(std::sync::atomic::Ordering::Relaxed))
        };
        self.given.iter().enumerate().filter(|(i, _)| !used(*i)).map(|(_, p)| p.clone()).collect()
    }

    /// Records which patterns of `set` (indices mapped by `src`) match `path`.
    fn note(&self, set: &GlobSet, src: &[usize], path: &std::path::Path) {
        for i in set.matches(path) {
            if let Some(u) = src.get(i).and_then(|g| self.used.get(*g)) {
                u.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether no pattern was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether the entry at `rel` named `name` matches a pattern (never when there are none).
    pub(crate) fn matches(&self, rel: &[u8], name: &[u8]) -> bool {
        if self.empty {
            return false;
        }
        let (name, rel) = (
            std::path::Path::new(OsStr::from_bytes(name)),
            std::path::Path::new(OsStr::from_bytes(rel)),
        );
        let by_name = self.names.is_match(name);
        let by_path = self.paths.is_match(rel);
        // Which ones matched is asked only on a match (rare), off the hot path.
        if by_name {
            self.note(&self.names, &self.name_src, name);
        }
        if by_path {
            self.note(&self.paths, &self.path_src, rel);
        }
        by_name || by_path
    }
}

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Patterns {
        Patterns::new(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), "exclude").unwrap()
    }

    #[test]
    fn name_patterns_match_at_any_depth_and_path_patterns_are_anchored() {
        let e = ex(&["*.tmp", "solr4/index", "2026/11/**"]);
        assert!(e.matches(b"a/b/x.tmp", b"x.tmp"));
        assert!(!e.matches(b"a/b/x.tmpl", b"x.tmpl"));
        assert!(e.matches(b"solr4/index", b"index"));
        assert!(!e.matches(b"other/solr4/index", b"index"));
        assert!(e.matches(b"2026/11/21/doc.bin", b"doc.bin"));
        assert!(!e.matches(b"2026/12/01/doc.bin", b"doc.bin"));
        assert!(!ex(&[]).matches(b"anything", b"anything"));
    }

    // See: issue 12, defect 6 (`--exclude /cache` dropped every `cache` at every depth).
    #[test]
    fn a_leading_slash_anchors_the_pattern_to_the_root() {
        let e = ex(&["/cache", "/logs/"]);
        assert!(e.matches(b"cache", b"cache"));
        assert!(!e.matches(b"app/cache", b"cache"), "a deeper cache is kept");
        assert!(!e.matches(b"a/b/cache", b"cache"));
        assert!(e.matches(b"logs", b"logs"));
        assert!(!e.matches(b"srv/logs", b"logs"));
        let unanchored = ex(&["cache"]);
        assert!(unanchored.matches(b"app/cache", b"cache"));
    }

    // See: issue 17 ("an --include/--exclude pattern that matched nothing is named").
    #[test]
    fn patterns_that_matched_nothing_are_known() {
        let e = ex(&["*.tmp", "/cache", "never/**"]);
        assert!(e.matches(b"a/x.tmp", b"x.tmp"));
        assert!(e.matches(b"cache", b"cache"));
        assert!(!e.matches(b"other", b"other"));
        assert_eq!(e.unmatched(), vec!["never/**".to_owned()]);
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = Patterns::new(&["a[".to_owned()], "exclude").unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }
}
