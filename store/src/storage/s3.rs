//! A repository in S3-compatible object storage (AWS S3, Ceph RGW, MinIO, SeaweedFS), through
//! the `object_store` crate. Chosen over Apache OpenDAL (whose blocking operator rustic uses):
//! both speak S3 with conditional writes and multipart uploads, but `object_store` is one
//! focused client (S3, GCS, Azure) whose create-only and `If-Match` writes are part of its
//! core API (`PutMode::{Create, Update}`), with retries and jittered backoff built in and
//! configurable, and a smaller dependency tree (reqwest with rustls on ring, no service
//! registry, no second runtime layer); OpenDAL's reach over dozens of services is not
//! something `store` needs. Both need a tokio runtime under a blocking interface. (OpenDAL was
//! not measured here.) FORMAT.md §13.1 says what the storage must give.
//!
//! Objects keep the names they have in a local repository (`packs/ab/<id>.pack`,
//! `snapshots/<id>`, `config`), below the location's prefix, so a local repository copied into
//! a bucket whole is a repository there. Nothing of the S3 client is seen past [`Storage`].
//!
//! Every request is retried with jittered exponential backoff on 5xx answers (`SlowDown`
//! included), dropped connections and timeouts; after the last retry the error names the
//! object, the operation and the HTTP status. Requests are counted per kind
//! ([`S3Storage::requests`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Named, ObjectDir, Storage, WriteMode};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::pack::PackSource;

mod windows;

/// Packs larger than this are uploaded in parts of [`PART_SIZE`].
const MULTIPART_OVER: u64 = 16 << 20;
/// The size of one part of a multipart upload (S3's minimum is 5 MiB), and what one upload
/// holds in memory at a time.
const PART_SIZE: usize = 8 << 20;
/// Where a repository in object storage is: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`
/// (restic's form; without a scheme, `https`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http[s]://HOST[:PORT]`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Below which the repository's objects are, without leading or trailing `/` (may be
    /// empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3:...`.
    ///
    /// # Errors
    /// A message saying what is wrong with `url`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let rest = url.strip_prefix("s3:").ok_or("an object storage location starts with s3:")?;
        let (scheme, rest) = match rest.split_once("://") {
            Some((s @ ("http" | "https"), r)) => (s, r),
            Some((s, _)) => return Err(format!("scheme {s}: is not http or https")),
            None => ("https", rest),
        };
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().filter(|h| !h.is_empty()).ok_or("no host")?;
        let bucket = parts.next().filter(|b| !b.is_empty()).ok_or("no bucket after the host")?;
        let prefix = parts.next().unwrap_or("").trim_matches('/').to_owned();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!("prefix {prefix} has a . or .. component"));
        }
        Ok(S3Location { endpoint: format!("{scheme}://{host}"), bucket: bucket.to_owned(), prefix })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Requests made, by kind, and bytes moved.
#[derive(Debug, Default)]
struct Counts {
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// What one process asked of the object store (for `--json` and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    /// GET requests (whole objects and ranges).
    pub get: u64,
    /// PUT requests (objects and parts of multipart uploads).
    pub put: u64,
    /// HEAD requests.
    pub head: u64,
    /// LIST requests (pages).
    pub list: u64,
    /// DELETE requests.
    pub delete: u64,
    /// Bytes uploaded.
    pub bytes_up: u64,
    /// Bytes downloaded.
    pub bytes_down: u64,
}

/// What the server showed of itself when first asked.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Whether a create (`If-None-Match: *`) of an existing object was refused.
    conditional_writes: bool,
    /// The server's clock less this host's, in milliseconds.
    clock_offset_ms: i64,
}

struct Inner {
    location: S3Location,
    client: AmazonS3,
    runtime: tokio::runtime::Runtime,
    counts: Counts,
    probe: Mutex<Option<Probe>>,
    /// The ranges of packs fetched or being fetched ([`windows`]).
    windows: Mutex<windows::Windows<Window>>,
}

/// A repository in an S3 bucket.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Storage({})", self.inner.location)
    }
}

/// Credentials of `profile` in the shared AWS credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
/// or `~/.aws/credentials`), when there is one: (key id, secret, session token).
fn profile_credentials(profile: &str) -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    credentials_of(&std::fs::read_to_string(path).ok()?, profile)
}

/// The credentials of `profile` in the text of a shared credentials file (INI: `[profile]`
/// sections of `key = value` lines, `#` and `;` comments).
fn credentials_of(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut in_profile = false;
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with(['#', ';'])) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
        } else if let Some((k, v)) = line.split_once('=').filter(|_| in_profile) {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

impl S3Storage {
    /// A client of the bucket at `location`, with credentials from the usual AWS variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`) or,
    /// without them, the `AWS_PROFILE` (default `default`) of the shared credentials file.
    /// Nothing is asked of the server yet.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the repository when no client can be made.
    pub fn open(location: &S3Location) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidOption { option: "repository", reason };
        let mut builder = AmazonS3Builder::from_env();
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            if let Some((id, secret, token)) = profile_credentials(&profile) {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = token {
                    builder = builder.with_token(token);
                }
            }
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        // Each wait is drawn between 100 ms and four times the last (at most 15 s): about a
        // minute over the ten retries. (Base 2 averaged 2 s in all, too short for a server
        // asking to slow down.)
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 4.0,
            },
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
        };
        let client_options = object_store::ClientOptions::new()
            .with_allow_http(location.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        let client = builder
            .with_endpoint(&location.endpoint)
            .with_bucket_name(&location.bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(client_options)
            .build()
            .map_err(|e| invalid(format!("{location}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-s3")
            .enable_all()
            .build()
            .at(location.to_string())?;
        Ok(S3Storage {
            inner: Arc::new(Inner {
                location: location.clone(),
                client,
                runtime,
                counts: Counts::default(),
                probe: Mutex::new(None),
                windows: Mutex::new(windows::Windows::default()),
            }),
        })
    }

    /// Whether nothing is stored below the location yet (its bucket must exist).
    ///
    /// # Errors
    /// [`Error::Io`] naming the location when it cannot be listed (no such bucket, no access).
    pub fn is_empty(&self) -> Result<bool> {
        let inner = &self.inner;
        let prefix = inner.key("");
        inner.counts.list.fetch_add(1, Ordering::Relaxed);
        let first = inner.runtime.block_on(async {
            let mut list = inner.client.list(Some(&prefix));
            list.try_next().await
        });
        Ok(first.map_err(|e| inner.fail("LIST", &prefix, e))?.is_none())
    }
}

/// `e` of operation `op`, as an I/O error of kind `NotFound`, `AlreadyExists` (a create that
/// lost, or a condition that failed) or `Other`; the message has the HTTP status when there
/// was one.
fn io_error(op: &str, e: object_store::Error) -> std::io::Error {
    use std::io::ErrorKind as K;
    let kind = match &e {
        object_store::Error::NotFound { .. } => K::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            K::AlreadyExists
        }
        _ => K::Other,
    };
    std::io::Error::new(kind, format!("{op}: {e}"))
}

impl Inner {
    /// The key of `rel` below the prefix.
    fn key(&self, rel: &str) -> Key {
        match (self.location.prefix.is_empty(), rel.is_empty()) {
            (true, _) => Key::from(rel),
            (false, true) => Key::from(self.location.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{rel}", self.location.prefix)),
        }
    }

    fn object_key(&self, dir: ObjectDir, id: Id) -> Key {
        let hex = id.to_hex();
        match dir {
            ObjectDir::Packs => self.key(&format!("packs/{}/{hex}.pack", &hex[..2])),
            _ => self.key(&format!("{}/{hex}", dir.name())),
        }
    }

    fn url(&self, key: &Key) -> PathBuf {
        PathBuf::from(format!("s3:{}/{}/{key}", self.location.endpoint, self.location.bucket))
    }

    /// `e` of operation `op` on `key`, as an I/O error naming the object ([`io_error`]).
    fn fail(&self, op: &str, key: &Key, e: object_store::Error) -> Error {
        Error::Io { path: self.url(key), cause: io_error(op, e) }
    }

    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .runtime
            .block_on(async { self.client.get(key).await?.bytes().await })
            .map_err(|e| self.fail("GET", key, e))?;
        self.counts.bytes_down.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes.to_vec())
    }

    /// [`Inner::get`] of an object at most `max_len` long: `Ok(Err(len))` when it is longer,
    /// told by the answer's length before its body is read (which is then not read). With
    /// the object's metadata.
    fn get_at_most(
        &self,
        key: &Key,
        max_len: u64,
    ) -> Result<(std::result::Result<Vec<u8>, u64>, object_store::ObjectMeta)> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let (bytes, meta) = self
            .runtime
            .block_on(async {
                let got = self.client.get(key).await?;
                let meta = got.meta.clone();
                if meta.size > max_len {
                    return Ok((Err(meta.size), meta));
                }
                Ok((Ok(got.bytes().await?), meta))
            })
            .map_err(|e| self.fail("GET", key, e))?;
        let bytes = bytes.map(|b| {
            self.counts.bytes_down.fetch_add(b.len() as u64, Ordering::Relaxed);
            b.to_vec()
        });
        Ok((bytes, meta))
    }

    fn head(&self, key: &Key) -> Result<object_store::ObjectMeta> {
        self.counts.head.fetch_add(1, Ordering::Relaxed);
        self.runtime.block_on(self.client.head(key)).map_err(|e| self.fail("HEAD", key, e))
    }

    fn put(&self, key: &Key, payload: PutPayload, mode: PutMode) -> Result<()> {
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_up.fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        let op = match mode {
            PutMode::Overwrite => "PUT",
            PutMode::Create => "PUT (create only)",
            PutMode::Update(_) => "PUT (update)",
        };
        self.runtime
            .block_on(self.client.put_opts(key, payload, PutOptions::from(mode)))
            .map(|_| ())
            .map_err(|e| self.fail(op, key, e))
    }

    fn delete(&self, key: &Key) -> Result<()> {
        self.counts.delete.fetch_add(1, Ordering::Relaxed);
        match self.runtime.block_on(self.client.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("DELETE", key, e)),
        }
    }

    /// Writes `bytes` at `key`; a create when asked is made with `If-None-Match: *`, so of
    /// several writers exactly one succeeds.
    fn write(&self, key: &Key, bytes: &[u8], mode: WriteMode, label: &str) -> Result<()> {
        crate::crash::point(label, "synced");
        let mode = match mode {
            WriteMode::Replace => PutMode::Overwrite,
            WriteMode::CreateNew => PutMode::Create,
        };
        self.put(key, PutPayload::from(bytes.to_vec()), mode)?;
        crate::crash::point(label, "renamed");
        crate::crash::point(label, "durable");
        Ok(())
    }

    /// Uploads the file open as `file` to `key`: in one request, or in parts when large (one
    /// part in memory at a time); an upload that fails is aborted, leaving no object.
    fn upload(&self, key: &Key, file: &std::fs::File, temp: &std::path::Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let len = file.metadata().at(temp)?.len();
        if len <= MULTIPART_OVER {
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut bytes, 0).at(temp)?;
            return self.put(key, PutPayload::from(bytes), PutMode::Overwrite);
        }
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        let mut upload = self
            .runtime
            .block_on(self.client.put_multipart(key))
            .map_err(|e| self.fail("multipart upload start", key, e))?;
        let sent = (|| {
            let mut offset = 0u64;
            while offset < len {
                let n = usize::try_from((len - offset).min(PART_SIZE as u64)).unwrap_or(PART_SIZE);
                let mut part = vec![0u8; n];
                file.read_exact_at(&mut part, offset).at(temp)?;
                self.counts.put.fetch_add(1, Ordering::Relaxed);
                self.counts.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                self.runtime
                    .block_on(upload.put_part(PutPayload::from(part)))
                    .map_err(|e| self.fail("multipart upload part", key, e))?;
                offset += n as u64;
            }
            self.counts.put.fetch_add(1, Ordering::Relaxed);
            self.runtime
                .block_on(upload.complete())
                .map(|_| ())
                .map_err(|e| self.fail("multipart upload completion", key, e))
        })();
        if sent.is_err() {
            let _ = self.runtime.block_on(upload.abort());
        }
        sent
    }

    /// The keys below `rel/` (recursively, or only those directly in it).
    fn list(&self, rel: &str, recursive: bool) -> Result<Vec<Key>> {
        Ok(self.list_sized(rel, recursive)?.into_iter().map(|(k, _)| k).collect())
    }

    /// [`Inner::list`], with each object's length.
    fn list_sized(&self, rel: &str, recursive: bool) -> Result<Vec<(Key, u64)>> {
        let prefix = self.key(rel);
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        let listed = self.runtime.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = if recursive {
                self.client.list(Some(&prefix)).try_collect().await?
            } else {
                self.client.list_with_delimiter(Some(&prefix)).await?.objects
            };
            Ok(metas.into_iter().map(|m| (m.location, m.size)).collect::<Vec<_>>())
        });
        let listed = listed.map_err(|e| self.fail("LIST", &prefix, e))?;
        // A listing is a request per page of a thousand objects.
        let pages = (listed.len() as u64).div_ceil(1000).max(1);
        self.counts.list.fetch_add(pages - 1, Ordering::Relaxed);
        Ok(listed)
    }

    /// Asks the server, once per process, whether it refuses a second create of one object
    /// and what its clock says.
    fn probe(&self) -> Result<Probe> {
        let mut held = self.probe.lock().map_err(|_| Error::WorkerPanicked)?;
        if let Some(p) = *held {
            return Ok(p);
        }
        let key = self.key(&format!("probe-{}", crate::repo::random_id()?.to_hex()));
        let payload = PutPayload::from_static(b"probe");
        let probe = self.probe_on(&key, &payload, |p| self.put(&key, p, PutMode::Create));
        let _ = self.delete(&key);
        let probe = probe?;
        *held = Some(probe);
        Ok(probe)
    }

    /// Creates `key` with `create` and learns from it whether the server refuses a second
    /// create of one object (the same bytes again: nothing changes where it does not) and
    /// what its clock says (the object's `Last-Modified`). The object stays; on error the
    /// caller removes it.
    fn probe_on(
        &self,
        key: &Key,
        payload: &PutPayload,
        create: impl FnOnce(PutPayload) -> Result<()>,
    ) -> Result<Probe> {
        let before = crate::time::now_ns();
        create(payload.clone())?;
        let after = crate::time::now_ns();
        let conditional_writes = match self.put(key, payload.clone(), PutMode::Create) {
            Ok(()) => false,
            Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {
                true
            }
            Err(e) => return Err(e),
        };
        // The server's time stamps are whole seconds: the middle of that second.
        let server_ms = self.head(key)?.last_modified.timestamp_millis() + 500;
        let local_ms = (before / 2 + after / 2) / 1_000_000;
        Ok(Probe { conditional_writes, clock_offset_ms: server_ms - local_ms })
    }

    /// The age of an object whose `Last-Modified` is `meta`'s, by the server's clock.
    fn age_of(&self, meta: &object_store::ObjectMeta) -> Result<Duration> {
        let offset = self.probe()?.clock_offset_ms;
        let server_now = crate::time::now_ns() / 1_000_000 + offset;
        let written = meta.last_modified.timestamp_millis() + 500;
        Ok(Duration::from_millis(u64::try_from(server_now - written).unwrap_or(0)))
    }
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        self.inner.location.to_string()
    }

    fn describe(&self, dir: ObjectDir, id: Id) -> PathBuf {
        self.inner.url(&self.inner.object_key(dir, id))
    }

    fn describe_named(&self, name: Named) -> PathBuf {
        self.inner.url(&self.inner.key(name.name()))
    }

    fn read_named(&self, name: Named) -> Result<Vec<u8>> {
        self.inner.get(&self.inner.key(name.name()))
    }

    fn write_named(&self, name: Named, bytes: &[u8], mode: WriteMode, label: &str) -> Result<()> {
        self.inner.write(&self.inner.key(name.name()), bytes, mode, label)
    }

    fn list(&self, dir: ObjectDir) -> Result<Vec<Id>> {
        let packs = dir == ObjectDir::Packs;
        let keys = self.inner.list(dir.name(), packs)?;
        let mut out: Vec<Id> = keys
            .iter()
            .filter_map(|k| k.filename())
            .filter_map(|n| if packs { n.strip_suffix(".pack") } else { Some(n) })
            .filter_map(|n| n.parse::<Id>().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn size(&self, dir: ObjectDir, id: Id) -> Result<u64> {
        Ok(self.inner.head(&self.inner.object_key(dir, id))?.size)
    }

    fn pack_sizes(&self) -> Result<Option<Vec<(Id, u64)>>> {
        let listed = self.inner.list_sized(ObjectDir::Packs.name(), true)?;
        Ok(Some(
            listed
                .iter()
                .filter_map(|(k, size)| {
                    let id = k.filename()?.strip_suffix(".pack")?.parse::<Id>().ok()?;
                    Some((id, *size))
                })
                .collect(),
        ))
    }

    fn read(&self, dir: ObjectDir, id: Id) -> Result<Vec<u8>> {
        self.inner.get(&self.inner.object_key(dir, id))
    }

    fn write(
        &self,
        dir: ObjectDir,
        id: Id,
        bytes: &[u8],
        mode: WriteMode,
        label: &str,
    ) -> Result<()> {
        self.inner.write(&self.inner.object_key(dir, id), bytes, mode, label)
    }

    fn put_file(
        &self,
        dir: ObjectDir,
        id: Id,
        file: &std::fs::File,
        temp: &std::path::Path,
        label: &str,
    ) -> Result<()> {
        crate::crash::point(label, "synced");
        self.inner.upload(&self.inner.object_key(dir, id), file, temp)?;
        crate::crash::point(label, "renamed");
        crate::crash::point(label, "durable");
        std::fs::remove_file(temp).at(temp)
    }

    fn open_pack(&self, id: Id) -> Result<Arc<dyn PackSource>> {
        let key = self.inner.object_key(ObjectDir::Packs, id);
        let size = self.inner.head(&key)?.size;
        let size = Arc::new(std::sync::OnceLock::from(size));
        Ok(Arc::new(S3Pack { inner: Arc::clone(&self.inner), id, key, size }))
    }

    fn open_pack_for_blobs(&self, id: Id) -> Result<Arc<dyn PackSource>> {
        // No HEAD: the first GET's answer gives the pack's length (a pack missing fails that
        // GET, naming it).
        let key = self.inner.object_key(ObjectDir::Packs, id);
        let size = Arc::new(std::sync::OnceLock::new());
        Ok(Arc::new(S3Pack { inner: Arc::clone(&self.inner), id, key, size }))
    }

    fn remove(&self, dir: ObjectDir, ids: &[Id]) -> Result<()> {
        if dir == ObjectDir::Packs {
            if let Ok(mut windows) = self.inner.windows.lock() {
                ids.iter().for_each(|id| windows.forget(*id, None));
            }
        }
        ids.iter().try_for_each(|id| self.inner.delete(&self.inner.object_key(dir, *id)))
    }

    fn age(&self, dir: ObjectDir, id: Id) -> Result<Duration> {
        let meta = self.inner.head(&self.inner.object_key(dir, id))?;
        self.inner.age_of(&meta)
    }

    fn read_at_most(
        &self,
        dir: ObjectDir,
        id: Id,
        max_len: u64,
    ) -> Result<std::result::Result<Vec<u8>, u64>> {
        Ok(self.inner.get_at_most(&self.inner.object_key(dir, id), max_len)?.0)
    }

    fn read_with_age(&self, dir: ObjectDir, id: Id) -> Result<(Vec<u8>, Duration)> {
        let (bytes, meta) = self.inner.get_at_most(&self.inner.object_key(dir, id), u64::MAX)?;
        Ok((bytes.unwrap_or_default(), self.inner.age_of(&meta)?))
    }

    fn write_lock(&self, dir: ObjectDir, id: Id, bytes: &[u8], label: &str) -> Result<()> {
        let inner = &self.inner;
        let key = inner.object_key(dir, id);
        // A create retried after its answer was lost finds the lock made: ours if it holds
        // these bytes (its name is new).
        let create = || match inner.write(&key, bytes, WriteMode::CreateNew, label) {
            Err(Error::Io { cause, .. })
                if cause.kind() == std::io::ErrorKind::AlreadyExists
                    && inner.get(&key).is_ok_and(|held| held == bytes) =>
            {
                Ok(())
            }
            other => other,
        };
        let mut held = inner.probe.lock().map_err(|_| Error::WorkerPanicked)?;
        if held.is_some() {
            return create();
        }
        // Not probed yet: the lock is the probe (created, created again, looked at).
        let payload = PutPayload::from(bytes.to_vec());
        match inner.probe_on(&key, &payload, |_| create()) {
            Ok(probe) => {
                *held = Some(probe);
                Ok(())
            }
            Err(e) => {
                let _ = inner.delete(&key);
                Err(e)
            }
        }
    }

    fn touch(&self, dir: ObjectDir, id: Id) -> Result<()> {
        // Rewritten with `If-Match` on what was read: a lock removed (or replaced) since is
        // not made again, and its holder learns it lost it.
        let inner = &self.inner;
        let key = inner.object_key(dir, id);
        inner.counts.get.fetch_add(1, Ordering::Relaxed);
        let (bytes, e_tag) = inner
            .runtime
            .block_on(async {
                let got = inner.client.get(&key).await?;
                let e_tag = got.meta.e_tag.clone();
                Ok::<_, object_store::Error>((got.bytes().await?, e_tag))
            })
            .map_err(|e| inner.fail("GET", &key, e))?;
        let mode = PutMode::Update(UpdateVersion { e_tag, version: None });
        match inner.put(&key, PutPayload::from(bytes), mode) {
            Err(Error::Io { path, cause }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Io {
                    path,
                    cause: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("removed or replaced since it was read ({cause})"),
                    ),
                })
            }
            other => other,
        }
    }

    fn lists_cheaply(&self) -> bool {
        false
    }

    fn conditional_writes(&self) -> Result<bool> {
        Ok(self.inner.probe()?.conditional_writes)
    }

    fn requests(&self) -> Option<RequestStats> {
        let c = &self.inner.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(RequestStats {
            get: n(&c.get),
            put: n(&c.put),
            head: n(&c.head),
            list: n(&c.list),
            delete: n(&c.delete),
            bytes_up: n(&c.bytes_up),
            bytes_down: n(&c.bytes_down),
        })
    }
}

/// A range of a pack being fetched (a task of the runtime, under way whether or not anybody
/// waits for it yet), or fetched; every reader waiting for it gets the same bytes.
type Window = futures::future::Shared<futures::future::BoxFuture<'static, WindowBytes>>;

/// The bytes of a window, or why they could not be had (kind and message of the I/O error).
type WindowBytes = std::result::Result<bytes::Bytes, (std::io::ErrorKind, String)>;

/// A pack in the bucket, read at offsets through the storage's windows ([`windows`]): ranged
/// GETs of growing size while it is read in order, the next one fetched ahead.
struct S3Pack {
    inner: Arc<Inner>,
    id: Id,
    key: Key,
    /// Its length, once a HEAD or a GET's answer gave it.
    size: Arc<std::sync::OnceLock<u64>>,
}

/// Gets `start..start + len` of `key` and gives its body to `each` as it arrives: all of it,
/// or what there is up to the object's end (more than asked is an error). Returns the bytes
/// given and the object's length.
async fn get_range_each(
    client: &AmazonS3,
    key: &Key,
    start: u64,
    len: u64,
    mut each: impl FnMut(&[u8]),
) -> std::result::Result<(u64, u64), (std::io::ErrorKind, String)> {
    let failed = |e| {
        let e = io_error("GET range", e);
        (e.kind(), e.to_string())
    };
    let options = object_store::GetOptions {
        range: Some((start..start.saturating_add(len)).into()),
        ..Default::default()
    };
    let got = client.get_opts(key, options).await.map_err(failed)?;
    let object_len = got.meta.size;
    let mut body = got.into_stream();
    let mut given = 0u64;
    while let Some(piece) = body.try_next().await.map_err(failed)? {
        if given + piece.len() as u64 > len {
            let kind = std::io::ErrorKind::InvalidData;
            return Err((kind, "GET range: the server sent more than asked".to_owned()));
        }
        each(&piece);
        given += piece.len() as u64;
    }
    if given < len && start + given < object_len {
        let kind = std::io::ErrorKind::UnexpectedEof;
        return Err((kind, "GET range: the server sent less than asked".to_owned()));
    }
    Ok((given, object_len))
}

/// Downloads `start..` of `key` into `to`: all of it, or what there is up to the object's end.
/// Returns the bytes filled and the object's length.
async fn get_range_into(
    client: &AmazonS3,
    key: &Key,
    start: u64,
    to: &mut [u8],
) -> std::result::Result<(usize, u64), (std::io::ErrorKind, String)> {
    let mut filled = 0;
    let (_, object_len) = get_range_each(client, key, start, to.len() as u64, |piece| {
        // Within `to`: never more than asked.
        to[filled..filled + piece.len()].copy_from_slice(piece);
        filled += piece.len();
    })
    .await?;
    Ok((filled, object_len))
}

impl S3Pack {
    /// Starts fetching `start..end` of the pack.
    fn fetch(&self, start: u64, end: u64) -> Window {
        use futures::FutureExt;
        self.count_get(end - start);
        let (client, key) = (self.inner.client.clone(), self.key.clone());
        let size = Arc::clone(&self.size);
        let task = self.inner.runtime.spawn(async move {
            // The window is a mapping of its own, given back to the system when dropped: as
            // buffers of the allocator, windows of a few MiB raised glibc's threshold for
            // mapping and stayed in its arenas (17 MB more peak RSS for a restore).
            let len = usize::try_from(end - start).unwrap_or(usize::MAX);
            let failed = |e: std::io::Error| (e.kind(), e.to_string());
            let mut window = memmap2::MmapMut::map_anon(len).map_err(failed)?;
            let (filled, object_len) = get_range_into(&client, &key, start, &mut window).await?;
            let _ = size.set(object_len);
            Ok(bytes::Bytes::from_owner(window.make_read_only().map_err(failed)?).slice(..filled))
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err((std::io::ErrorKind::Other, format!("GET range: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// Counts a GET of `len` bytes.
    fn count_get(&self, len: u64) {
        self.inner.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.counts.bytes_down.fetch_add(len, Ordering::Relaxed);
    }

    /// `e` as the I/O error of a read of this pack up to `end`, naming it; a read past the end
    /// of a pack whose length was not known before (`known`) is said as such.
    fn failed(
        &self,
        (kind, message): (std::io::ErrorKind, String),
        known: Option<u64>,
        end: u64,
    ) -> std::io::Error {
        if known.is_none() && end > self.size() {
            return past_end();
        }
        std::io::Error::new(kind, format!("{}: {message}", self.inner.url(&self.key).display()))
    }
}

fn past_end() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end of the pack")
}

impl PackSource for S3Pack {
    fn size(&self) -> u64 {
        if let Some(size) = self.size.get() {
            return *size;
        }
        // Opened without a HEAD and not read yet (only a read that failed asks): a pack that
        // cannot be looked at reads as empty, which the caller reports as cut short.
        match self.inner.head(&self.key) {
            Ok(meta) => *self.size.get_or_init(|| meta.size),
            Err(_) => 0,
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        // Not known yet (opened without a HEAD): the first answer tells, and a read past the
        // end gets fewer bytes than it asked for.
        let size = self.size.get().copied();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| size.is_none_or(|size| *e <= size))
            .ok_or_else(past_end)?;
        // A read as large as the largest window (a whole pack checked) goes straight into the
        // caller's buffer: kept as a window too, it would be held twice.
        if buf.len() as u64 >= windows::MAX_WINDOW {
            self.count_get(buf.len() as u64);
            let got = get_range_into(&self.inner.client, &self.key, offset, buf);
            let (filled, object_len) =
                self.inner.runtime.block_on(got).map_err(|e| self.failed(e, size, end))?;
            let _ = self.size.set(object_len);
            return if filled == buf.len() { Ok(()) } else { Err(past_end()) };
        }
        let pieces = {
            let mut windows = self
                .inner
                .windows
                .lock()
                .map_err(|_| std::io::Error::other("a reader of the bucket panicked"))?;
            let mut found = windows.lookup(self.id, offset, end, size.unwrap_or(u64::MAX));
            if let Some(miss) = found.miss {
                let window = self.fetch(miss.start, miss.end);
                windows.insert(self.id, miss, window.clone());
                found.pieces.push((miss.start, window));
            }
            // Nothing ahead of a pack of unknown length (it may end there).
            if let Some(ahead) = found.ahead.filter(|_| size.is_some()) {
                windows.insert(self.id, ahead, self.fetch(ahead.start, ahead.end));
            }
            found.pieces
        };
        let mut at = offset;
        for (start, window) in pieces {
            if at < start {
                break; // the window before ended short, at the pack's end
            }
            let bytes = self.inner.runtime.block_on(window).map_err(|e| {
                if let Ok(mut windows) = self.inner.windows.lock() {
                    windows.forget(self.id, Some(start));
                }
                self.failed(e, size, end)
            })?;
            // `at - offset` is within `buf` (at < end), `at - start` within the window or past
            // what it holds.
            let into = &mut buf[usize::try_from(at - offset).unwrap_or(usize::MAX)..];
            let held =
                bytes.get(usize::try_from(at - start).unwrap_or(usize::MAX)..).unwrap_or(&[]);
            let n = held.len().min(into.len());
            into[..n].copy_from_slice(&held[..n]);
            at += n as u64;
        }
        if at < end {
            return Err(past_end());
        }
        Ok(())
    }

    fn read_in_order(
        &self,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        // One GET, its body given on as it arrives: no window, nothing held.
        let size = self.size.get().copied();
        let end = offset.checked_add(len).ok_or_else(past_end)?;
        if len == 0 {
            return Ok(());
        }
        self.count_get(len);
        let got = get_range_each(&self.inner.client, &self.key, offset, len, |piece| each(piece));
        let (given, object_len) =
            self.inner.runtime.block_on(got).map_err(|e| self.failed(e, size, end))?;
        let _ = self.size.set(object_len);
        if given < len {
            return Err(past_end());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_restic_writes_them() {
        let l = S3Location::parse("s3:http://127.0.0.1:8333/bucket/a/b/").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:8333");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:8333/bucket/a/b");
        let l = S3Location::parse("s3:s3.amazonaws.com/bucket").unwrap();
        assert_eq!((l.endpoint.as_str(), l.prefix.as_str()), ("https://s3.amazonaws.com", ""));
        for bad in ["s3:", "s3:http://host", "s3:http://host/", "s3:ftp://h/b", "s3:h/b/../x"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_profile_of_the_shared_credentials_file_is_read_and_only_that_one() {
        let text = "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n\
                    # a comment = not a key\n[backup]\n aws_access_key_id=AKBACKUP \n\
                    aws_secret_access_key = s2\naws_session_token = tok\n[partial]\n\
                    aws_access_key_id = AKONLY\n";
        assert_eq!(credentials_of(text, "default"), Some(("AKDEFAULT".into(), "s1".into(), None)));
        assert_eq!(
            credentials_of(text, "backup"),
            Some(("AKBACKUP".into(), "s2".into(), Some("tok".into())))
        );
        assert_eq!(credentials_of(text, "partial"), None, "no secret: no credentials");
        assert_eq!(credentials_of(text, "missing"), None);
    }

    /// The conformance test of every storage, against the server `.ci/run` starts
    /// (`STORE_TEST_S3`), in a prefix of its own.
    #[test]
    fn s3_storage_keeps_the_storage_contract() {
        let base = crate::testing::s3_test_location("conformance");
        let storage = S3Storage::open(&base).unwrap();
        assert!(storage.is_empty().unwrap(), "a fresh prefix");
        assert!(storage.conditional_writes().unwrap(), "SeaweedFS honours If-None-Match");
        let staging = tempfile::tempdir().unwrap();
        // Its time stamps are whole seconds.
        super::super::tests::conformance(&storage, staging.path(), Duration::from_millis(2500));
        let used = storage.requests().unwrap();
        assert!(used.put > 16 && used.get > 0 && used.list > 0, "{used:?}");
    }

    /// A process's first lock is its probe of the server: created, created again (refused),
    /// looked at; no probe object of its own.
    #[test]
    fn the_first_lock_is_the_probe() {
        let base = crate::testing::s3_test_location("probe-lock");
        let storage = S3Storage::open(&base).unwrap();
        let lock = Id::hash(b"a lock");
        storage.write_lock(ObjectDir::Locks, lock, b"held", "lock").unwrap();
        let used = storage.requests().unwrap();
        assert_eq!((used.put, used.head, used.delete), (2, 1, 0), "{used:?}");
        assert!(storage.conditional_writes().unwrap(), "SeaweedFS honours If-None-Match");
        assert_eq!(storage.requests().unwrap(), used, "known from the lock");
        assert_eq!(storage.read(ObjectDir::Locks, lock).unwrap(), b"held");
        assert!(storage.age(ObjectDir::Locks, lock).unwrap() < Duration::from_secs(5));
        assert!(storage.inner.list("", true).unwrap().len() == 1, "only the lock is there");
        // Probed: the next lock is one request.
        storage.write_lock(ObjectDir::Locks, Id::hash(b"another"), b"held", "lock").unwrap();
        assert_eq!(storage.requests().unwrap().put, used.put + 1);
        // A create whose answer was lost and that is tried again finds its own lock: taken.
        // Another's bytes under the name are no lock of ours.
        let again = Id::hash(b"again");
        storage.write(ObjectDir::Locks, again, b"mine", WriteMode::CreateNew, "t").unwrap();
        storage.write_lock(ObjectDir::Locks, again, b"mine", "lock").unwrap();
        let taken = storage.write_lock(ObjectDir::Locks, again, b"other", "lock").unwrap_err();
        assert!(
            matches!(&taken, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::AlreadyExists),
            "{taken}"
        );
    }

    /// Manifests are downloaded once per host: this host's copies serve later runs, a copy that
    /// does not verify is downloaded again, and copies of removed sets are forgotten; a check
    /// reads the bucket's.
    #[test]
    fn manifests_are_downloaded_once_and_their_copies_verified() {
        use crate::repo::{InitOptions, OpenOptions, RepoLocation, Repository};
        let dir = tempfile::tempdir().unwrap();
        let location = RepoLocation::S3(crate::testing::s3_test_location("manifests"));
        let cache = Some(dir.path().join("host"));
        let repo = Repository::init_at(&location, &InitOptions::default(), cache.clone()).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..3 {
            #[allow(clippy::disallowed_methods, reason = "a source tree, not the repository")]
            std::fs::write(src.join("file"), format!("version {i}")).unwrap();
            crate::testing::snap(&repo, dir.path());
        }
        drop(repo);
        let copies = dir.path().join("host/manifests");
        let open = || {
            let opts = OpenOptions { cache_dir: cache.clone(), ..OpenOptions::default() };
            Repository::open_at(&location, &opts).unwrap()
        };
        let manifests = |repo: &Repository| {
            let mut m: Vec<_> = repo
                .list_snapshots()
                .unwrap()
                .into_iter()
                .map(|s| (s.id, s.manifest.unwrap().time_ns))
                .collect();
            m.sort_unstable();
            m
        };
        let repo = open();
        let before = repo.storage().requests().unwrap();
        let sets = manifests(&repo);
        assert_eq!(sets.len(), 3);
        let used = repo.storage().requests().unwrap();
        assert_eq!((used.get - before.get, used.head - before.head), (0, 0), "written here: kept");
        assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 3);

        // A copy lost, one damaged: both downloaded again, the same sets.
        let (lost, damaged) = (copies.join(sets[0].0.to_hex()), copies.join(sets[1].0.to_hex()));
        std::fs::remove_file(&lost).unwrap();
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes[10] ^= 1;
        #[allow(clippy::disallowed_methods, reason = "damaging a copy on purpose")]
        std::fs::write(&damaged, bytes).unwrap();
        let repo = open();
        let before = repo.storage().requests().unwrap().get;
        assert_eq!(manifests(&repo), sets);
        let got = repo.storage().requests().unwrap().get - before;
        assert_eq!(got, 2, "the lost and the damaged one");
        assert_eq!(manifests(&open()), sets);
        assert!(lost.exists() && damaged.exists(), "kept again");

        // A set removed (by another host: the copy stays until a listing misses it).
        repo.storage().remove(ObjectDir::Snapshots, &[sets[2].0 .0]).unwrap();
        #[allow(clippy::disallowed_methods, reason = "not a copy: left alone")]
        std::fs::write(copies.join("notes.txt"), b"an operator's file").unwrap();
        assert_eq!(manifests(&open()), sets[..2]);
        assert!(!copies.join(sets[2].0.to_hex()).exists(), "its copy forgotten");
        assert_eq!(std::fs::read(copies.join("notes.txt")).unwrap(), b"an operator's file");
        std::fs::remove_file(copies.join("notes.txt")).unwrap();
        // Removed here: the copy goes with it.
        let repo = open();
        repo.remove_snapshot(sets[1].0).unwrap();
        assert!(!damaged.exists());

        // A check of the repository reads the bucket's manifests.
        let repo = open();
        repo.bypass_blob_cache();
        let before = repo.storage().requests().unwrap().get;
        assert_eq!(manifests(&repo), sets[..1]);
        assert_eq!(repo.storage().requests().unwrap().get - before, 1);
    }

    /// A frame of this host's cache that no longer verifies is forgotten, the blob read from its
    /// pack in the bucket, and the good frame kept again.
    #[test]
    fn a_damaged_frame_in_the_cache_is_forgotten_and_the_blob_read_from_its_pack() {
        use crate::repo::{InitOptions, RepoLocation, Repository};
        let dir = tempfile::tempdir().unwrap();
        let location = RepoLocation::S3(crate::testing::s3_test_location("frames"));
        let cache = Some(dir.path().join("cache"));
        let repo = Repository::init_at(&location, &InitOptions::default(), cache).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        #[allow(clippy::disallowed_methods, reason = "a source tree, not the repository")]
        std::fs::write(src.join("sub/file"), b"some content").unwrap();
        crate::testing::snap(&repo, dir.path());
        let listed = repo.list_snapshots().unwrap();
        let root = listed[0].manifest.as_ref().unwrap().components[0].root;
        let tree = repo.load_tree(root).unwrap();

        let index = repo.index().unwrap();
        let good = index.frame_get(&root.0).unwrap().expect("kept when it was packed");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        index.frame_put(&root.0, &bad).unwrap();
        let gets = repo.storage().requests().unwrap().get;
        assert_eq!(repo.load_tree(root).unwrap(), tree, "the same tree, from its pack");
        assert!(repo.storage().requests().unwrap().get > gets, "read from the bucket");
        assert_eq!(index.frame_get(&root.0).unwrap(), Some(good), "the good frame kept again");
    }
}
