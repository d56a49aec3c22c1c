//! Selecting what a restore writes: the components asked for, then `--include` and
//! `--exclude`, walked depth first in name order and handed to a [`Sink`] (the restoring
//! writer, or the `--dry-run` lister), so both agree on the selection.

#[allow(clippy::wildcard_imports, reason = "the parts of restore share its imports")]
use super::*;

/// Which paths of a set a restore selects: components, then `--include` and `--exclude`.
pub(super) struct Selection {
    pub(super) include: Patterns,
    pub(super) exclude: Patterns,
}

impl Selection {
    /// The patterns that matched nothing, as `--include PATTERN` and `--exclude PATTERN`.
    pub(super) fn unmatched(&self) -> Vec<String> {
        let include = self.include.unmatched().into_iter().map(|p| format!("--include {p}"));
        let exclude = self.exclude.unmatched().into_iter().map(|p| format!("--exclude {p}"));
        include.chain(exclude).collect()
    }

    pub(super) fn new(opts: &RestoreOptions) -> Result<Self> {
        Ok(Selection {
            include: Patterns::new(&opts.include, "include pattern")?,
            exclude: Patterns::new(&opts.exclude, "exclude pattern")?,
        })
    }
}

/// The components of `manifest` that `opts` selects, in the set's order.
///
/// # Errors
/// [`Error::InvalidOption`] naming a requested component the set does not have.
pub(super) fn selected_components<'m>(
    manifest: &'m Manifest,
    opts: &RestoreOptions,
) -> Result<Vec<&'m Component>> {
    if let Some(missing) =
        opts.components.iter().find(|n| !manifest.components.iter().any(|c| c.name == **n))
    {
        let names: Vec<&str> = manifest.components.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::InvalidOption {
            option: "component",
            reason: format!("the set has no component {missing:?} (it has: {})", names.join(", ")),
        });
    }
    Ok(manifest
        .components
        .iter()
        .filter(|c| opts.components.is_empty() || opts.components.contains(&c.name))
        .collect())
}

/// What the selecting walk hands its entries to.
pub(super) trait Sink {
    /// A directory of the output, created on first use.
    type Dir: Clone;
    /// Creates directory `node` (at `path`) in `parent`.
    fn make_dir(&mut self, parent: &Self::Dir, node: &Node, path: &str) -> Result<Self::Dir>;
    /// Restores a file, symlink or special file into `dir`.
    fn leaf(&mut self, dir: &Self::Dir, node: Node, path: String) -> Result<()>;
    /// Records a path that cannot be restored; the walk goes on.
    fn failure(&mut self, path: &str, error: &Error);
}

pub(super) struct Frame<'r, D> {
    pub(super) dir: Option<D>,
    pub(super) node: Option<Node>,
    pub(super) path: String,
    pub(super) raw: Vec<u8>,
    pub(super) entries: Box<dyn Iterator<Item = Result<Node>> + 'r>,
    pub(super) included: bool,
    pub(super) failed: bool,
}

/// The directory of the innermost frame, creating it and every missing ancestor: a
/// directory is created only once something below it is selected.
pub(super) fn ensure_dir<S: Sink>(stack: &mut [Frame<'_, S::Dir>], sink: &mut S) -> Option<S::Dir> {
    let start = stack.iter().position(|f| f.dir.is_none()).unwrap_or(stack.len());
    for i in start..stack.len() {
        let (before, rest) = stack.split_at_mut(i);
        let frame = &mut rest[0];
        if frame.failed {
            return None;
        }
        let parent = before.last()?.dir.as_ref()?;
        let node = frame.node.as_ref()?;
        match sink.make_dir(parent, node, &frame.path) {
            Ok(dir) => frame.dir = Some(dir),
            Err(e) => {
                sink.failure(&frame.path, &e);
                frame.failed = true;
                return None;
            }
        }
    }
    stack.last()?.dir.clone()
}

/// Walks the selected paths of `components` depth first, in name order, handing directories
/// and leaves to `sink`. Memory: one page iterator per level of the current path.
///
/// # Errors
/// Only errors of `sink` stop the walk; damaged trees are handed to [`Sink::failure`].
pub(super) fn walk_selected<S: Sink>(
    repo: &Repository,
    selection: &Selection,
    root: &S::Dir,
    components: &[&Component],
    sink: &mut S,
) -> Result<()> {
    for c in components {
        if !is_valid_name(c.name.as_bytes()) {
            sink.failure(
                &c.name,
                &Error::InvalidOption {
                    option: "component",
                    reason: "invalid component name".into(),
                },
            );
            continue;
        }
        let top = match component_node(repo, c) {
            Ok(node) => node,
            Err(e) => {
                sink.failure(&c.name, &e);
                continue;
            }
        };
        let mut stack = vec![Frame {
            dir: Some(root.clone()),
            node: None,
            path: String::new(),
            raw: Vec::new(),
            entries: Box::new(std::iter::once(Ok(top))),
            included: selection.include.is_empty(),
            failed: false,
        }];
        while let Some(frame) = stack.last_mut() {
            let node = match frame.entries.next() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    sink.failure(&frame.path, &e);
                    stack.pop();
                    continue;
                }
                Some(Ok(node)) => node,
            };
            let path = join(&frame.path, &node.name);
            if !is_valid_name(&node.name) {
                sink.failure(
                    &path,
                    &Error::InvalidOption { option: "name", reason: "invalid name in tree".into() },
                );
                continue;
            }
            let mut raw = frame.raw.clone();
            if !raw.is_empty() {
                raw.push(b'/');
            }
            raw.extend_from_slice(&node.name);
            if selection.exclude.matches(&raw, &node.name) {
                continue;
            }
            let included = frame.included || selection.include.matches(&raw, &node.name);
            if let Content::Dir { tree } = node.content {
                // A directory whose tree is damaged is still created (when selected), empty.
                let entries: Box<dyn Iterator<Item = Result<Node>>> = match dir_entries(repo, tree)
                {
                    Ok(entries) => Box::new(entries),
                    Err(e) => {
                        sink.failure(&path, &e);
                        Box::new(std::iter::empty())
                    }
                };
                stack.push(Frame {
                    dir: None,
                    node: Some(node),
                    path,
                    raw,
                    entries,
                    included,
                    failed: false,
                });
                if included {
                    ensure_dir(&mut stack, sink);
                }
            } else if included {
                if let Some(dir) = ensure_dir(&mut stack, sink) {
                    sink.leaf(&dir, node, path)?;
                }
            }
        }
    }
    Ok(())
}
