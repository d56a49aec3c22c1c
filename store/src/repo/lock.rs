//! Repository locks (FORMAT.md §9): objects in `locks/` naming a holder.
//!
//! Writers and readers take **shared** locks; commands that delete (prune, repair) take the
//! **exclusive** lock. Taking a lock is two-phase: write our lock file durably, then list the
//! others; on a conflict our file is removed again and we retry until the wait is over, so of
//! two racing processes at least one backs off and none proceeds wrongly. A held lock's file
//! modification time is refreshed every [`REFRESH`]; a lock not refreshed for `stale_after` no
//! longer blocks anyone (its holder is presumed dead) but is only removed by `store unlock`; a
//! lock of a process on this host that no longer exists is removed on sight.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Corruption, Error, ObjectRef, Result};
use crate::id::Id;
use crate::lock::{LockKind, LockRecord};
use crate::repo::Repository;
use crate::storage::{ObjectDir, Storage};

/// A held lock's modification time is refreshed this often (or every eighth of the stale time,
/// when that is shorter).
pub const REFRESH: Duration = Duration::from_secs(60);
/// Times a lock is written again when its temp file is removed before it is renamed.
const VANISHED_RETRIES: u32 = 8;
/// Default time after which an unrefreshed lock no longer blocks: 30 minutes.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// A lock found in `locks/`.
#[derive(Debug, Clone)]
pub struct LockInfo {
    /// Its id.
    pub id: Id,
    /// Where it is.
    pub path: PathBuf,
    /// Its content.
    pub record: LockRecord,
    /// Time since it was last refreshed.
    pub age: Duration,
    /// Not refreshed for longer than the stale time.
    pub stale: bool,
    /// Held by a process of this host that no longer exists.
    pub dead: bool,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        write!(
            f,
            "{} lock of `{}` on host {} pid {} taken {} ago, refreshed {} s ago ({})",
            match r.kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            r.command,
            r.host,
            r.pid,
            crate::time::human_duration(crate::time::now_ns().saturating_sub(r.start_ns)),
            self.age.as_secs(),
            self.path.display()
        )
    }
}

/// How to take a lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long to wait for a conflicting lock to go away.
    pub wait: Duration,
    /// After how long without refresh a lock stops blocking.
    pub stale_after: Duration,
    /// The command taking the lock, recorded in it.
    pub command: String,
    /// Set by the caller when the operator asks to stop (SIGINT, SIGTERM): a wait for a lock
    /// ends at once with [`Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: Duration::ZERO,
            stale_after: DEFAULT_STALE_AFTER,
            command: String::new(),
            interrupt: None,
        }
    }
}

/// What a writer needs to know about its own lock: whether it could have gone stale.
#[derive(Debug)]
pub(crate) struct LockState {
    id: Id,
    path: PathBuf,
    stale_after: Duration,
    /// Wall-clock time of the last refresh, ms since the epoch.
    last_refresh_ms: AtomicU64,
    /// Longest time between two refreshes seen, ms.
    max_gap_ms: AtomicU64,
    released: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl LockState {
    fn refreshed(&self) {
        let now = now_ms();
        let last = self.last_refresh_ms.swap(now, Ordering::SeqCst);
        self.max_gap_ms.fetch_max(now.saturating_sub(last), Ordering::SeqCst);
    }

    /// Whether the lock is still ours and was never left unrefreshed for half the stale time
    /// (after which another host's prune may have treated it as stale).
    pub(crate) fn check(&self, storage: &dyn Storage) -> Result<()> {
        let gap = self
            .max_gap_ms
            .load(Ordering::SeqCst)
            .max(now_ms().saturating_sub(self.last_refresh_ms.load(Ordering::SeqCst)));
        let limit = (self.stale_after / 2).as_millis() as u64;
        let gone = || storage.size(ObjectDir::Locks, self.id).is_err();
        if self.released.load(Ordering::SeqCst) || gap >= limit || gone() {
            return Err(Error::LockLost {
                path: self.path.clone(),
                reason: if gap >= limit {
                    format!("it went {} s without a refresh (the process was paused?)", gap / 1000)
                } else {
                    "its file was removed".into()
                },
            });
        }
        Ok(())
    }
}

/// A held lock: refreshed in the background, removed when dropped.
pub struct RepoLock {
    id: Id,
    path: PathBuf,
    storage: Arc<dyn Storage>,
    stop: Arc<AtomicBool>,
    state: Arc<LockState>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl RepoLock {
    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.state.released.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.refresher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = self.storage.remove(ObjectDir::Locks, &[self.id]);
    }
}

/// This machine's host name.
pub(crate) fn this_host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

pub(crate) fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

impl Repository {
    /// Every lock in `locks/`; a lock file that cannot be read is returned as an error naming it.
    ///
    /// # Errors
    /// [`Error::Io`] when `locks/` cannot be listed.
    pub fn list_locks(&self, stale_after: Duration) -> Result<Vec<Result<LockInfo>>> {
        self.locks_but(stale_after, None)
    }

    /// [`Repository::list_locks`] but for `own` (not read: this process knows it).
    fn locks_but(&self, stale_after: Duration, own: Option<Id>) -> Result<Vec<Result<LockInfo>>> {
        Ok(self.scan_locks(stale_after, own)?.into_iter().map(|(_, lock)| lock).collect())
    }

    /// [`Repository::list_locks`] but for `own`, each with its id.
    fn scan_locks(
        &self,
        stale_after: Duration,
        own: Option<Id>,
    ) -> Result<Vec<(Id, Result<LockInfo>)>> {
        let host = this_host();
        let mut out = Vec::new();
        for id in self.storage.list(ObjectDir::Locks)? {
            if Some(id) == own {
                continue;
            }
            let path = self.storage.describe(ObjectDir::Locks, id);
            let (bytes, age) = match self.storage.read_with_age(ObjectDir::Locks, id) {
                Ok(v) => v,
                // Removed by its holder while we listed.
                Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => {
                    out.push((id, Err(e)));
                    continue;
                }
            };
            let opened = self.crypto().open_file(crate::crypto::FileKind::Lock, &bytes);
            let info = opened.and_then(|b| LockRecord::decode(&b)).map(|record| {
                let dead = record.host == host && !process_exists(record.pid);
                LockInfo { id, path: path.clone(), record, age, stale: age > stale_after, dead }
            });
            out.push((
                id,
                info.map_err(|reason| match reason {
                    // A lock of a newer build: named as such, never taken for damage.
                    Corruption::UnsupportedVersion { .. } => {
                        Error::corrupt(ObjectRef::Lock(path), reason)
                    }
                    reason => Error::LockDamaged { path, reason: reason.to_string() },
                }),
            ));
        }
        Ok(out)
    }

    /// Takes a lock of `kind`, waiting up to `opts.wait` for conflicting locks to go away.
    /// Locks of dead processes on this host are removed, and reported through `removed`.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder when the wait is over, [`Error::LockDamaged`] for an
    /// unreadable lock file, [`Error::Io`] when the lock cannot be written.
    pub fn lock(
        &self,
        kind: LockKind,
        opts: &LockOptions,
        removed: &mut dyn FnMut(&LockInfo),
    ) -> Result<RepoLock> {
        let record = LockRecord {
            kind,
            host: this_host(),
            pid: std::process::id(),
            start_ns: crate::time::now_ns(),
            command: opts.command.clone(),
        };
        let deadline = std::time::Instant::now() + opts.wait;
        let mut attempt = 0u32;
        let mut vanished = 0u32;
        loop {
            let id = Id::hash(format!("{record:?}{attempt}{:?}", SystemTime::now()).as_bytes());
            let sealed =
                self.seal_file(crate::crypto::FileKind::Lock, record.encode(self.version())?)?;
            match self.storage.write_lock(ObjectDir::Locks, id, &sealed, "lock") {
                Ok(()) => {}
                // Our temp file went before it became the lock: a prune, under the exclusive
                // lock, clears `tmp/`. Try again; the next listing meets that lock if it is
                // still held.
                Err(Error::Io { cause, .. })
                    if cause.kind() == std::io::ErrorKind::NotFound
                        && vanished < VANISHED_RETRIES =>
                {
                    vanished += 1;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Where a create is not refused when the object exists, a lock refresh cannot
            // tell that its lock was removed, and racing `init`s and key writes are not told
            // apart: there no two processes hold locks at once. (Known once the lock is
            // written: object storage is probed on it.)
            let one_at_a_time = match self.storage.conditional_writes() {
                Ok(honoured) => !honoured,
                Err(e) => {
                    let _ = self.storage.remove(ObjectDir::Locks, &[id]);
                    return Err(e);
                }
            };
            let mut blocker = None;
            let others = match self.locks_but(opts.stale_after, Some(id)) {
                Ok(others) => others,
                Err(e) => {
                    let _ = self.storage.remove(ObjectDir::Locks, &[id]);
                    return Err(e);
                }
            };
            for other in others {
                let other = match other {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = self.storage.remove(ObjectDir::Locks, &[id]);
                        return Err(e);
                    }
                };
                if other.id == id {
                    continue;
                }
                if other.dead {
                    if self.storage.remove(ObjectDir::Locks, &[other.id]).is_ok() {
                        removed(&other);
                    }
                    continue;
                }
                let conflict = one_at_a_time
                    || kind == LockKind::Exclusive
                    || other.record.kind == LockKind::Exclusive;
                if conflict && !other.stale {
                    blocker = Some(other);
                    break;
                }
            }
            let Some(holder) = blocker else {
                return Ok(self.hold(id, opts.stale_after));
            };
            let _ = self.storage.remove(ObjectDir::Locks, &[id]);
            let now = std::time::Instant::now();
            if now >= deadline {
                let why = if one_at_a_time {
                    format!(
                        "{holder} (and {} ignores conditional writes, so only one process uses \
                         it at a time)",
                        self.storage.location()
                    )
                } else {
                    holder.to_string()
                };
                return Err(Error::Locked { holder: why });
            }
            crate::crash::point("lock", "waiting");
            if opts.interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                return Err(Error::Interrupted);
            }
            attempt += 1;
            // Back off with a little jitter, so two waiting processes do not collide forever.
            let jitter = Duration::from_millis(
                u64::from(std::process::id() % 97) + 50 * u64::from(attempt % 5),
            );
            std::thread::sleep((Duration::from_millis(200) + jitter).min(deadline - now));
        }
    }

    fn hold(&self, id: Id, stale_after: Duration) -> RepoLock {
        let path = self.storage.describe(ObjectDir::Locks, id);
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(LockState {
            id,
            path: path.clone(),
            stale_after,
            last_refresh_ms: AtomicU64::new(now_ms()),
            max_gap_ms: AtomicU64::new(0),
            released: AtomicBool::new(false),
        });
        let every = REFRESH.min(stale_after / 8).max(Duration::from_millis(50));
        let (storage, s, st) = (Arc::clone(&self.storage), Arc::clone(&stop), Arc::clone(&state));
        let refresher = std::thread::Builder::new()
            .name("lock-refresh".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    std::thread::park_timeout(every);
                    if !s.load(Ordering::SeqCst) && storage.touch(ObjectDir::Locks, id).is_ok() {
                        st.refreshed();
                    }
                }
            })
            .ok();
        if let Ok(mut held) = self.held_lock.lock() {
            *held = Some(Arc::clone(&state));
        }
        RepoLock { id, path, storage: Arc::clone(&self.storage), stop, state, refresher }
    }

    /// Whether a process other than this one holds a lock that is neither stale nor dead (an
    /// unreadable lock counts as held). A running writer may own packs it has not indexed yet.
    ///
    /// # Errors
    /// [`Error::Io`] when `locks/` cannot be listed.
    pub(crate) fn others_hold_locks(&self) -> Result<bool> {
        let (own, stale_after) = match self.held_lock.lock().ok().and_then(|h| h.clone()) {
            Some(state) if !state.released.load(Ordering::SeqCst) => {
                (Some(state.id), state.stale_after)
            }
            _ => (None, DEFAULT_STALE_AFTER),
        };
        for lock in self.locks_but(stale_after, own)? {
            match lock {
                Ok(info) if info.stale || info.dead => {}
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Removes stale locks (not refreshed for `stale_after`, or of dead processes on this host),
    /// or every lock with `all`. Returns what was removed.
    ///
    /// # Errors
    /// [`Error::Io`] when `locks/` cannot be listed or a lock not removed.
    pub fn unlock(&self, stale_after: Duration, all: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (id, lock) in self.scan_locks(stale_after, None)? {
            let note = match lock {
                Ok(info) if all || info.stale || info.dead => info.to_string(),
                Ok(_) => continue,
                Err(Error::LockDamaged { path, reason }) => {
                    format!("damaged lock file {} ({reason})", path.display())
                }
                // A newer build's lock cannot be judged stale: removed only with `all`.
                Err(Error::UnsupportedVersion { object: ObjectRef::Lock(path), found, .. })
                    if all =>
                {
                    format!("lock file {} of format version {found}", path.display())
                }
                Err(e) => return Err(e),
            };
            self.storage.remove(ObjectDir::Locks, &[id])?;
            removed.push(note);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;

    fn repo(dir: &Path) -> Repository {
        Repository::init(&dir.join("repo"), &InitOptions::default()).unwrap()
    }

    fn opts(command: &str) -> LockOptions {
        LockOptions { command: command.into(), ..LockOptions::default() }
    }

    #[test]
    fn shared_locks_share_and_an_exclusive_one_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let a = repo.lock(LockKind::Shared, &opts("snapshot"), &mut |_| {}).unwrap();
        let b = repo.lock(LockKind::Shared, &opts("restore"), &mut |_| {}).unwrap();
        let err = repo.lock(LockKind::Exclusive, &opts("prune"), &mut |_| {}).err().unwrap();
        assert!(
            matches!(&err, Error::Locked { holder } if holder.contains("shared lock of `")),
            "{err}"
        );
        assert_eq!(
            repo.list_locks(DEFAULT_STALE_AFTER).unwrap().len(),
            2,
            "the refused one left none"
        );
        drop((a, b));
        let x = repo.lock(LockKind::Exclusive, &opts("prune"), &mut |_| {}).unwrap();
        let err = repo.lock(LockKind::Shared, &opts("snapshot"), &mut |_| {}).err().unwrap();
        assert!(err.to_string().contains("exclusive lock of `prune`"), "{err}");
        drop(x);
        assert!(repo.list_locks(DEFAULT_STALE_AFTER).unwrap().is_empty(), "dropping removes");
    }

    #[test]
    fn a_dead_process_lock_is_removed_and_reported_and_a_stale_one_blocks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let dead = LockRecord {
            kind: LockKind::Exclusive,
            host: this_host(),
            pid: 4_000_000,
            start_ns: 1,
            command: "prune".into(),
        };
        let put = |name: &[u8], record: &LockRecord| {
            let id = Id::hash(name);
            let bytes = record.encode(repo.version()).unwrap();
            repo.storage()
                .write(ObjectDir::Locks, id, &bytes, crate::storage::WriteMode::Replace, "t")
                .unwrap();
            (id, repo.storage().describe(ObjectDir::Locks, id))
        };
        let (_, dead_path) = put(b"dead", &dead);
        let mut removed = Vec::new();
        let held = repo
            .lock(LockKind::Shared, &opts("snapshot"), &mut |i| removed.push(i.record.pid))
            .unwrap();
        assert_eq!(removed, vec![4_000_000]);
        assert!(!dead_path.exists());
        drop(held);
        // Another host's exclusive lock not refreshed for longer than the stale time.
        let other = LockRecord { host: "elsewhere".into(), pid: 1, ..dead };
        let (_, old) = put(b"old", &other);
        let blocked = repo.lock(LockKind::Shared, &opts("snapshot"), &mut |_| {});
        assert!(matches!(blocked, Err(Error::Locked { .. })), "fresh, it blocks");
        // Not refreshed for an hour: stale.
        let hour_ago = rustix::fs::Timespec {
            tv_sec: i64::try_from(now_ms() / 1000).unwrap() - 3600,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps { last_access: hour_ago, last_modification: hour_ago };
        rustix::fs::utimensat(rustix::fs::CWD, &old, &times, rustix::fs::AtFlags::empty()).unwrap();
        let held = repo.lock(LockKind::Shared, &opts("snapshot"), &mut |_| {}).unwrap();
        assert!(old.exists(), "stale locks are only removed by unlock");
        drop(held);
        assert_eq!(repo.unlock(DEFAULT_STALE_AFTER, false).unwrap().len(), 1);
    }

    #[test]
    fn a_writer_whose_lock_file_is_removed_knows_it_lost_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let held = repo.lock(LockKind::Shared, &opts("snapshot"), &mut |_| {}).unwrap();
        repo.check_lock().unwrap();
        std::fs::remove_file(held.path()).unwrap();
        let err = repo.check_lock().unwrap_err();
        assert!(matches!(err, Error::LockLost { .. }), "{err}");
    }
}
