//! Encryption at rest (FORMAT.md §15): key files, subkeys, keyed ids, sealed blobs and files.
//!
//! A repository of format version 3 may be encrypted. A random 32-byte master secret is wrapped,
//! once per password, in a key file (`keys/<id>`) with a key from Argon2id. From the master
//! secret BLAKE3's key derivation makes one subkey per purpose: the keyed BLAKE3 that names
//! chunks and trees, the chunker's gear seed, the AEAD key of blobs and the AEAD key of
//! everything else (trailers, index files, manifests, locks, damage records).
//!
//! Everything sealed is XChaCha20-Poly1305 (format versions 3 and 4) or XAES-256-GCM (from
//! version 5, as the config says; key files stay XChaCha20-Poly1305) with a random 192-bit
//! nonce: `nonce || ciphertext || tag`, [`SEAL_OVERHEAD`] bytes longer than the plaintext. The
//! associated data binds a sealed object to what it claims to be (a blob to its id, kind, codec
//! and length; a file to its kind and version), so bytes moved to another place fail
//! authentication.
//!
//! [`Crypto`] is what the rest of the engine sees: cheap to clone, and for an unencrypted
//! repository ("plain") ids are unkeyed BLAKE3 and nothing is sealed.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Encryption;
use crate::error::{Corruption, Error, IoContext, Result};
use crate::format::{check_version, ByteReader};
use crate::id::{Id, ID_LEN};

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a plaintext: the nonce before it and the tag after it.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Magic of a sealed file (index file, manifest, lock, damage record): `STOREENC`.
const FILE_MAGIC: [u8; 8] = *b"STOREENC";
/// Bytes before a sealed file's nonce: magic, version, kind, three zero bytes.
const FILE_HEADER_LEN: usize = 16;
/// Magic of a key file: `STOREKEY`.
const KEY_MAGIC: [u8; 8] = *b"STOREKEY";
/// Bytes of a key file.
pub const KEY_FILE_LEN: usize = 8 + 4 + 4 + 12 + 32 + 8 + NONCE_LEN + ID_LEN + TAG_LEN;

/// The kinds of sealed files; the kind is part of what is authenticated, so a manifest cannot be
/// passed off as an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    /// `index/<id>`.
    Index = 1,
    /// `snapshots/<id>`.
    Manifest = 2,
    /// `locks/<id>`.
    Lock = 3,
    /// `damage/<id>`.
    Damage = 4,
    /// `verified/<id>`.
    Verified = 5,
}

/// A password, wiped from memory when dropped; its `Debug` shows nothing.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// A password of these bytes (the caller's copy should be wiped).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(Zeroizing::new(bytes))
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether it is the same password as `other`.
    #[must_use]
    pub fn same_as(&self, other: &Password) -> bool {
        *self.0 == *other.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Argon2id cost of a key file. A key file asking for more than [`KdfParams::MAX`] or less than
/// [`KdfParams::MIN`] is refused before any work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: 32 MiB, 4 passes, 4 lanes (RFC 9106's lanes), computed on as many threads
    /// as there are cores, up to 4: about 0.04 s on two cores here, 0.08 s with one lane
    /// (docs/BENCHMARKS.md). Above OWASP's recommendations for Argon2id (19 MiB and 2 passes);
    /// the memory is kept at half of RFC 9106's 64 MiB because it is the floor of every
    /// command's peak RSS (a snapshot of 2 GB needs 45 MB beside it), and a fourth pass makes
    /// up part of the difference. Key files made with one lane (the default before 2026-12-07)
    /// keep their lane.
    pub const DEFAULT: KdfParams =
        KdfParams { memory_kib: 32 << 10, iterations: 4, parallelism: 4 };
    /// The least a key file may ask for: 8 MiB, one pass, one lane.
    pub const MIN: KdfParams = KdfParams { memory_kib: 8 << 10, iterations: 1, parallelism: 1 };
    /// The most a key file may ask for: 2 GiB, 20 passes, 16 lanes.
    pub const MAX: KdfParams = KdfParams { memory_kib: 2 << 20, iterations: 20, parallelism: 16 };

    /// Checks the bounds.
    ///
    /// # Errors
    /// A message naming the parameter out of bounds.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (min, max) = (Self::MIN, Self::MAX);
        for (name, v, lo, hi, unit) in [
            ("memory", self.memory_kib, min.memory_kib, max.memory_kib, " KiB"),
            ("iterations", self.iterations, min.iterations, max.iterations, ""),
            ("parallelism", self.parallelism, min.parallelism, max.parallelism, ""),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "KDF {name} {v}{unit} is not between {lo}{unit} and {hi}{unit}"
                ));
            }
        }
        Ok(())
    }
}

/// The repository's master secret.
struct Master(Zeroizing<[u8; 32]>);

/// The subkeys of one repository.
struct Keys {
    id_key: Zeroizing<[u8; 32]>,
    blob_key: SealKey,
    file_key: SealKey,
    /// Keys the synthetic nonces of sealed files.
    file_nonce_key: Zeroizing<[u8; 32]>,
    gear_seed: u64,
}

impl Keys {
    /// A synthetic nonce (SIV-style): the XOF of keyed BLAKE3 over `parts`, each preceded by
    /// its length. The same input always gets the same nonce (and so the same sealed bytes);
    /// two different inputs never share one.
    fn synthetic_nonce(&self, parts: &[&[u8]]) -> [u8; NONCE_LEN] {
        let mut mac = blake3::Hasher::new_keyed(&self.file_nonce_key);
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        let mut nonce = [0u8; NONCE_LEN];
        mac.finalize_xof().fill(&mut nonce);
        nonce
    }

    /// The keys of a repository whose objects are sealed with `cipher` (anything but
    /// XAES-256-GCM is XChaCha20-Poly1305).
    fn derive(master: &Master, cipher: Encryption) -> Self {
        let sub = |context: &str| Zeroizing::new(blake3::derive_key(context, master.0.as_slice()));
        let seal = |context: &str| SealKey::new(cipher, sub(context));
        let mut gear = sub("store 2026-11-30 chunker gear seed");
        let gear_seed = u64::from_le_bytes(gear[..8].try_into().unwrap_or([0; 8]));
        gear.zeroize();
        Keys {
            id_key: sub("store 2026-11-30 blob id"),
            blob_key: seal("store 2026-11-30 blob seal"),
            file_key: seal("store 2026-11-30 file seal"),
            file_nonce_key: sub("store 2026-11-30 file nonce"),
            gear_seed,
        }
    }
}

/// How a repository names and stores bytes: plain (unkeyed ids, nothing sealed) or with the
/// repository's keys. Cheap to clone.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Crypto(encrypted)" } else { "Crypto(plain)" })
    }
}

/// The associated data of a blob: its id, kind, codec and raw length.
fn blob_aad(id: Id, kind: u8, codec: u8, raw_len: u32) -> [u8; ID_LEN + 6] {
    let mut aad = [0u8; ID_LEN + 6];
    aad[..ID_LEN].copy_from_slice(id.as_bytes());
    aad[ID_LEN] = kind;
    aad[ID_LEN + 1] = codec;
    aad[ID_LEN + 2..].copy_from_slice(&raw_len.to_le_bytes());
    aad
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).at("getrandom"),
        }
    }
    Ok(())
}

/// Seals `buf[start + NONCE_LEN..]` in place with `key`: a random nonce goes into
/// `buf[start..start + NONCE_LEN]`, the tag is appended.
fn seal_in_place(key: &SealKey, aad: &[u8], buf: &mut Vec<u8>, start: usize) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    seal_with_nonce(key, nonce, aad, buf, start)
}

/// The XChaCha20-Poly1305 of `key` and `nonce` as ring's ChaCha20-Poly1305 (RFC 8439, its
/// assembly is twice as fast as the portable code here): HChaCha20 of the key and the nonce's
/// first 16 bytes is the subkey, and `0 0 0 0 || the nonce's last 8 bytes` the nonce
/// (draft-irtf-cfrg-xchacha §2.3). The bytes are those of any XChaCha20-Poly1305 (a test
/// checks them against RustCrypto's).
fn xchacha(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce)> {
    use chacha20::cipher::consts::U10;
    use chacha20::cipher::generic_array::GenericArray;
    let (head, tail) = nonce.split_at(16);
    let mut sub = chacha20::hchacha::<U10>(key.into(), GenericArray::from_slice(head));
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, sub.as_slice());
    sub.as_mut_slice().zeroize();
    let unbound =
        unbound.map_err(|_| Error::Encode { what: "sealed object", reason: "key".into() })?;
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(tail);
    Ok((LessSafeKey::new(unbound), Nonce::assume_unique_for_key(n)))
}

/// A key that seals: XChaCha20-Poly1305's 32 bytes, or XAES-256-GCM's AES-256 key schedule
/// with the first subkey of its derivation (both wiped when dropped).
enum SealKey {
    XChaCha(Zeroizing<[u8; 32]>),
    Xaes(Box<XaesKey>),
}

impl SealKey {
    fn new(cipher: Encryption, key: Zeroizing<[u8; 32]>) -> Self {
        match cipher {
            Encryption::Xaes256Gcm => SealKey::Xaes(Box::new(XaesKey::new(&key))),
            Encryption::None | Encryption::XChaCha20Poly1305 => SealKey::XChaCha(key),
        }
    }

    /// ring's key and nonce for one message under `nonce`.
    fn for_nonce(&self, nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce)> {
        match self {
            SealKey::XChaCha(key) => xchacha(key, nonce),
            SealKey::Xaes(key) => key.for_nonce(nonce),
        }
    }
}

/// XAES-256-GCM (C2SP, `c2sp.org/XAES-256-GCM`): AES-256-GCM under a key derived per message
/// from the key and the nonce's first 12 bytes (two AES-256 blocks, as NIST SP 800-108r1's
/// counter-mode KDF with CMAC), with the nonce's last 12 bytes as GCM's nonce. Random 192-bit
/// nonces are as safe as XChaCha20-Poly1305's across hosts that never coordinate; ring's
/// AES-256-GCM (AES-NI, VAES, CLMUL) seals 2.5x and opens 3.3x as fast as its
/// ChaCha20-Poly1305 here (docs/BENCHMARKS.md).
struct XaesKey {
    aes: aes::Aes256,
    /// CMAC's first subkey: AES-256 of the zero block, doubled in GF(2^128).
    k1: Zeroizing<[u8; 16]>,
}

impl XaesKey {
    fn new(key: &[u8; 32]) -> Self {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new(key.into());
        let mut l = aes::Block::default();
        aes.encrypt_block(&mut l);
        let mut k1 = Zeroizing::new([0u8; 16]);
        for (i, out) in k1.iter_mut().enumerate() {
            *out = (l[i] << 1) | l.get(i + 1).map_or(0, |next| next >> 7);
        }
        if l[0] & 0x80 != 0 {
            k1[15] ^= 0x87;
        }
        l.as_mut_slice().zeroize();
        XaesKey { aes, k1 }
    }

    fn for_nonce(&self, nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce)> {
        use aes::cipher::BlockEncrypt;
        let (head, tail) = nonce.split_at(12);
        let mut derived = Zeroizing::new([0u8; 32]);
        for (counter, half) in (1u8..).zip(derived.chunks_exact_mut(16)) {
            // M_i = 0x00 || i || "X" || 0x00 || the nonce's first 12 bytes, XORed with K1.
            let mut m = aes::Block::default();
            m[1] = counter;
            m[2] = b'X';
            m[4..].copy_from_slice(head);
            for (b, k) in m.iter_mut().zip(self.k1.iter()) {
                *b ^= k;
            }
            self.aes.encrypt_block(&mut m);
            half.copy_from_slice(&m);
            m.as_mut_slice().zeroize();
        }
        let unbound = UnboundKey::new(&AES_256_GCM, derived.as_slice())
            .map_err(|_| Error::Encode { what: "sealed object", reason: "key".into() })?;
        let mut n = [0u8; 12];
        n.copy_from_slice(tail);
        Ok((LessSafeKey::new(unbound), Nonce::assume_unique_for_key(n)))
    }
}

/// [`seal_in_place`] with the nonce given.
fn seal_with_nonce(
    key: &SealKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<()> {
    let (cipher, ring_nonce) = key.for_nonce(&nonce)?;
    let (head, body) = buf.split_at_mut(start + NONCE_LEN);
    head[start..].copy_from_slice(&nonce);
    let tag = cipher
        .seal_in_place_separate_tag(ring_nonce, Aad::from(aad), body)
        .map_err(|_| Error::Encode { what: "sealed object", reason: "too large to seal".into() })?;
    buf.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens `sealed` (`nonce || ciphertext || tag`) with `key` into `out` (cleared first).
fn open_into(
    key: &SealKey,
    aad: &[u8],
    sealed: &[u8],
    what: &'static str,
    out: &mut Vec<u8>,
) -> std::result::Result<(), Corruption> {
    out.clear();
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Corruption::Truncated {
            offset: 0,
            needed: SEAL_OVERHEAD as u64,
            len: sealed.len() as u64,
        });
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let failed = || Corruption::AuthenticationFailed { what };
    let (cipher, ring_nonce) = key.for_nonce(&n).map_err(|_| failed())?;
    // Ciphertext and tag, opened in place; what is left is the plaintext.
    out.extend_from_slice(rest);
    match cipher.open_in_place(ring_nonce, Aad::from(aad), out) {
        Ok(plain) => {
            let len = plain.len();
            out.truncate(len);
            Ok(())
        }
        Err(_) => {
            out.clear();
            Err(failed())
        }
    }
}

impl Crypto {
    /// Plain: unkeyed ids, nothing sealed (format versions 1 and 2, and unencrypted version 3).
    #[must_use]
    pub fn plain() -> Self {
        Crypto(None)
    }

    /// Keys from a fixed master secret made from `seed` (tests only).
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn for_tests(seed: &[u8]) -> Self {
        Self::for_tests_sealed_with(seed, Encryption::Xaes256Gcm)
    }

    /// [`Crypto::for_tests`] sealing with `cipher` (tests only).
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub fn for_tests_sealed_with(seed: &[u8], cipher: Encryption) -> Self {
        let master = Master(Zeroizing::new(*blake3::hash(seed).as_bytes()));
        Crypto(Some(Arc::new(Keys::derive(&master, cipher))))
    }

    /// Whether things are sealed.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The id of a blob whose raw bytes are `raw`: BLAKE3, keyed when encrypted.
    #[must_use]
    pub fn id(&self, raw: &[u8]) -> Id {
        match &self.0 {
            None => Id::hash(raw),
            Some(k) => Id::from_bytes(*blake3::keyed_hash(&k.id_key, raw).as_bytes()),
        }
    }

    /// The chunker's gear seed: the config's, or one derived from the key.
    #[must_use]
    pub fn gear_seed(&self, configured: u64) -> u64 {
        self.0.as_ref().map_or(configured, |k| k.gear_seed)
    }

    /// Bytes sealing adds to a blob or a trailer.
    #[must_use]
    pub fn overhead(&self) -> usize {
        if self.is_encrypted() {
            SEAL_OVERHEAD
        } else {
            0
        }
    }

    /// Room to leave before a blob's stored bytes (for the nonce).
    pub(crate) fn nonce_room(&self) -> usize {
        if self.is_encrypted() {
            NONCE_LEN
        } else {
            0
        }
    }

    /// Seals a blob's stored bytes in place: `buf[start..]` holds [`Crypto::nonce_room`] bytes
    /// of room, then the compressed bytes; afterwards it holds what a pack stores.
    pub(crate) fn seal_blob(
        &self,
        id: Id,
        kind: u8,
        codec: u8,
        raw_len: u32,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(k) => seal_in_place(&k.blob_key, &blob_aad(id, kind, codec, raw_len), buf, start),
        }
    }

    /// The compressed bytes of a blob from what a pack stores: `stored` itself when plain,
    /// else opened into `out`.
    pub(crate) fn open_blob<'a>(
        &self,
        id: Id,
        kind: u8,
        codec: u8,
        raw_len: u32,
        stored: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> std::result::Result<&'a [u8], Corruption> {
        match &self.0 {
            None => Ok(stored),
            Some(k) => {
                let aad = blob_aad(id, kind, codec, raw_len);
                open_into(&k.blob_key, &aad, stored, "blob", out)?;
                Ok(out)
            }
        }
    }

    /// Seals a pack trailer (`aad`: the footer fields it belongs to); plain: as is.
    pub(crate) fn seal_trailer(&self, aad: &[u8], trailer: Vec<u8>) -> Result<Vec<u8>> {
        match &self.0 {
            None => Ok(trailer),
            Some(k) => {
                let nonce = k.synthetic_nonce(&[b"trailer", aad, &trailer]);
                let mut buf = vec![0u8; NONCE_LEN];
                buf.extend_from_slice(&trailer);
                seal_with_nonce(&k.file_key, nonce, aad, &mut buf, 0)?;
                Ok(buf)
            }
        }
    }

    /// Opens a pack trailer sealed by [`Crypto::seal_trailer`].
    pub(crate) fn open_trailer<'a>(
        &self,
        aad: &[u8],
        stored: &'a [u8],
    ) -> std::result::Result<std::borrow::Cow<'a, [u8]>, Corruption> {
        match &self.0 {
            None => Ok(std::borrow::Cow::Borrowed(stored)),
            Some(k) => {
                let mut out = Vec::new();
                open_into(&k.file_key, aad, stored, "pack trailer", &mut out)?;
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }

    /// The bytes of a file to write: `plain` (an object's own encoding, of format `version`)
    /// sealed in an envelope when encrypted, as is otherwise.
    ///
    /// # Errors
    /// [`Error::Io`] when no random nonce can be had.
    pub fn seal_file(&self, kind: FileKind, version: u32, plain: Vec<u8>) -> Result<Vec<u8>> {
        let Some(k) = &self.0 else { return Ok(plain) };
        let mut buf = Vec::with_capacity(FILE_HEADER_LEN + SEAL_OVERHEAD + plain.len());
        buf.extend_from_slice(&file_header(kind, version));
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        buf.extend_from_slice(&plain);
        let mut header = [0u8; FILE_HEADER_LEN];
        header.copy_from_slice(&buf[..FILE_HEADER_LEN]);
        // A synthetic nonce: the same object always seals to the same bytes, so its name stays
        // a function of its content (a manifest written again after a crash is the same file,
        // not a second set).
        let nonce = k.synthetic_nonce(&[b"file", &header, &plain]);
        seal_with_nonce(&k.file_key, nonce, &header, &mut buf, FILE_HEADER_LEN)?;
        Ok(buf)
    }

    /// The plaintext of a file read from the repository: opened when encrypted (the envelope
    /// must be of `kind`), as is otherwise. A sealed file in a plain repository, or a plain one in
    /// an encrypted repository, is refused.
    ///
    /// # Errors
    /// [`Corruption`] for a bad envelope or a failed authentication.
    pub fn open_file<'a>(
        &self,
        kind: FileKind,
        stored: &'a [u8],
    ) -> std::result::Result<std::borrow::Cow<'a, [u8]>, Corruption> {
        let sealed = stored.starts_with(&FILE_MAGIC);
        match &self.0 {
            None if sealed => {
                Err(Corruption::Invalid("an encrypted object in an unencrypted repository".into()))
            }
            None => Ok(std::borrow::Cow::Borrowed(stored)),
            Some(k) => {
                let mut r = ByteReader::new(stored, 0);
                r.magic(&FILE_MAGIC)?;
                let version = r.u32()?;
                check_version(version)?;
                let found = r.u8()?;
                if found != kind as u8 || r.take(3)? != [0u8; 3] {
                    return Err(Corruption::Invalid(format!(
                        "sealed object of kind {found}, expected {}",
                        kind as u8
                    )));
                }
                let (header, body) = stored.split_at(FILE_HEADER_LEN);
                let mut out = Vec::new();
                open_into(&k.file_key, header, body, "sealed file", &mut out)?;
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }
}

fn file_header(kind: FileKind, version: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12] = kind as u8;
    h
}

/// One key file: the master secret wrapped with a key derived from a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Format version.
    pub version: u32,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Argon2 salt.
    pub salt: [u8; 32],
    /// When the key was made, nanoseconds since the epoch.
    pub created_ns: i64,
    /// `nonce || sealed master secret || tag`.
    sealed: [u8; NONCE_LEN + ID_LEN + TAG_LEN],
}

/// Argon2id identifier in a key file.
const KDF_ARGON2ID: u8 = 1;

impl KeyFile {
    /// Encodes the key file (FORMAT.md §15.2).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header().to_vec();
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Everything before the nonce (authenticated with the repository id).
    fn header(&self) -> [u8; KEY_FILE_LEN - NONCE_LEN - ID_LEN - TAG_LEN] {
        let mut h = [0u8; KEY_FILE_LEN - NONCE_LEN - ID_LEN - TAG_LEN];
        h[..8].copy_from_slice(&KEY_MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12] = KDF_ARGON2ID;
        h[16..20].copy_from_slice(&self.kdf.memory_kib.to_le_bytes());
        h[20..24].copy_from_slice(&self.kdf.iterations.to_le_bytes());
        h[24..28].copy_from_slice(&self.kdf.parallelism.to_le_bytes());
        h[28..60].copy_from_slice(&self.salt);
        h[60..68].copy_from_slice(&self.created_ns.to_le_bytes());
        h
    }

    /// Decodes a key file; its KDF parameters must be within bounds.
    ///
    /// # Errors
    /// [`Corruption`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, Corruption> {
        let mut r = ByteReader::new(bytes, 0);
        r.magic(&KEY_MAGIC)?;
        let version = r.u32()?;
        check_version(version)?;
        let kdf_id = r.u8()?;
        if kdf_id != KDF_ARGON2ID {
            return Err(Corruption::Invalid(format!("unknown key derivation function {kdf_id}")));
        }
        if r.take(3)? != [0u8; 3] {
            return Err(Corruption::Invalid("reserved bytes of a key file are not zero".into()));
        }
        let kdf = KdfParams { memory_kib: r.u32()?, iterations: r.u32()?, parallelism: r.u32()? };
        kdf.validate().map_err(Corruption::Invalid)?;
        let salt = r.array()?;
        let created_ns = i64::from_le_bytes(r.array()?);
        let sealed = r.array()?;
        if r.remaining() != 0 {
            return Err(Corruption::Invalid(format!("{} bytes after the key", r.remaining())));
        }
        Ok(KeyFile { version, kdf, salt, created_ns, sealed })
    }

    /// The wrapping key for `password`.
    fn wrapping_key(&self, password: &Password) -> Result<Zeroizing<[u8; 32]>> {
        let params = argon2::Params::new(
            self.kdf.memory_kib,
            self.kdf.iterations,
            self.kdf.parallelism,
            Some(32),
        )
        .map_err(|e| Error::InvalidOption { option: "key derivation", reason: e.to_string() })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        let derive = |out: &mut [u8]| argon.hash_password_into(&password.0, &self.salt, out);
        // The lanes on threads of their own (no more than the lanes or the cores), not on a
        // global pool of a thread per core that would outlive the derivation.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let threads = cores.min(self.kdf.parallelism as usize);
        let pool =
            (threads > 1).then(|| rayon::ThreadPoolBuilder::new().num_threads(threads).build());
        let derived = match pool {
            Some(Ok(pool)) => pool.install(|| derive(out.as_mut_slice())),
            _ => derive(out.as_mut_slice()),
        };
        derived.map_err(|e| Error::InvalidOption { option: "password", reason: e.to_string() })?;
        Ok(out)
    }

    /// Wraps `master` for `password`.
    fn wrap(
        master: &Master,
        password: &Password,
        kdf: KdfParams,
        version: u32,
        repo_id: Id,
    ) -> Result<Self> {
        kdf.validate()
            .map_err(|reason| Error::InvalidOption { option: "key derivation", reason })?;
        let mut salt = [0u8; 32];
        random_bytes(&mut salt)?;
        let created_ns = crate::time::now_ns();
        let mut key =
            KeyFile { version, kdf, salt, created_ns, sealed: [0u8; NONCE_LEN + ID_LEN + TAG_LEN] };
        let wrapping = SealKey::XChaCha(key.wrapping_key(password)?);
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(master.0.as_slice());
        let aad = key.aad(repo_id);
        seal_in_place(&wrapping, &aad, &mut buf, 0)?;
        key.sealed.copy_from_slice(&buf);
        buf.zeroize();
        Ok(key)
    }

    fn aad(&self, repo_id: Id) -> Vec<u8> {
        let mut aad = self.header().to_vec();
        aad.extend_from_slice(repo_id.as_bytes());
        aad
    }

    /// The master secret, when `password` opens this key. `None`: another password.
    fn unwrap_master(&self, password: &Password, repo_id: Id) -> Result<Option<Master>> {
        let wrapping = SealKey::XChaCha(self.wrapping_key(password)?);
        let mut out = Vec::new();
        match open_into(&wrapping, &self.aad(repo_id), &self.sealed, "key", &mut out) {
            Ok(()) => {
                let mut master = Zeroizing::new([0u8; 32]);
                master.copy_from_slice(&out);
                out.zeroize();
                Ok(Some(Master(master)))
            }
            Err(_) => Ok(None),
        }
    }
}

/// A new master secret wrapped for `password`: the key file to write and the keys it opens, for
/// a repository sealed with `cipher`.
///
/// # Errors
/// Parameters out of bounds, no random source.
pub fn new_master(
    password: &Password,
    kdf: KdfParams,
    version: u32,
    repo_id: Id,
    cipher: Encryption,
) -> Result<(KeyFile, Unlocked)> {
    let mut secret = Zeroizing::new([0u8; 32]);
    random_bytes(secret.as_mut_slice())?;
    let master = Master(secret);
    let key = KeyFile::wrap(&master, password, kdf, version, repo_id)?;
    let crypto = Crypto(Some(Arc::new(Keys::derive(&master, cipher))));
    Ok((key, Unlocked { master, crypto }))
}

/// An opened key: the keys it gives, and what it takes to wrap them again for another password.
pub struct Unlocked {
    master: Master,
    /// The keys.
    pub crypto: Crypto,
}

impl Unlocked {
    /// The master secret wrapped for another password (`key add`, `key passwd`).
    ///
    /// # Errors
    /// Parameters out of bounds, no random source.
    pub fn wrap_for(
        &self,
        password: &Password,
        kdf: KdfParams,
        version: u32,
        repo_id: Id,
    ) -> Result<KeyFile> {
        KeyFile::wrap(&self.master, password, kdf, version, repo_id)
    }
}

/// Tries `password` on `key`: `Some` when it opens it, with the keys of a repository sealed
/// with `cipher`.
///
/// # Errors
/// Parameters the KDF refuses.
pub fn try_key(
    key: &KeyFile,
    password: &Password,
    repo_id: Id,
    cipher: Encryption,
) -> Result<Option<Unlocked>> {
    Ok(key.unwrap_master(password, repo_id)?.map(|master| {
        let crypto = Crypto(Some(Arc::new(Keys::derive(&master, cipher))));
        Unlocked { master, crypto }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams::MIN
    }

    fn keys() -> Crypto {
        keys_of(Encryption::Xaes256Gcm)
    }

    fn keys_of(cipher: Encryption) -> Crypto {
        let pw = Password::new(b"pw".to_vec());
        new_master(&pw, fast(), 5, Id::hash(b"repo"), cipher).unwrap().1.crypto
    }

    const CIPHERS: [Encryption; 2] = [Encryption::Xaes256Gcm, Encryption::XChaCha20Poly1305];

    #[test]
    fn wrapping_keys_are_argon2id_as_the_reference_implementation_computes_it_for_any_lanes() {
        // Expected: the reference implementation (Debian's `argon2` command, phc-winner-argon2):
        // `echo -n "correct horse" | argon2 saltsalt...salt -id -t 1 -k 8192 -p LANES -l 32 -r`.
        // Key files of one lane (made before lanes were computed on several threads) and of
        // the default's lanes must keep deriving the same key through upgrades of the crate.
        let expected = [
            (1, "bc09b5ccaf6e428adfba1fa72ea01ddb8ee49d7ef967c0c6c628e0056c370503"),
            (4, "c43d9a4dfb730204f5c1ab20bd7b2e69a4d1336cf6965a510ec06840aacdcc8b"),
        ];
        for (lanes, hex) in expected {
            let key = KeyFile {
                version: 3,
                kdf: KdfParams { memory_kib: 8192, iterations: 1, parallelism: lanes },
                salt: *b"saltsaltsaltsaltsaltsaltsaltsalt",
                created_ns: 0,
                sealed: [0; NONCE_LEN + ID_LEN + TAG_LEN],
            };
            let derived = key.wrapping_key(&Password::new(b"correct horse".to_vec())).unwrap();
            let derived: String = derived.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(derived, hex, "{lanes} lanes");
        }
        assert_eq!(KdfParams::DEFAULT.parallelism, 4, "the default's lanes are the second case");
    }

    #[test]
    fn key_files_open_with_their_password_only() {
        let repo = Id::hash(b"repo");
        let pw = Password::new(b"correct horse".to_vec());
        let (key, crypto) =
            new_master(&pw, fast(), 3, repo, Encryption::XChaCha20Poly1305).unwrap();
        let bytes = key.encode();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(back, key);
        let try_key =
            |k: &KeyFile, pw: &Password, repo| try_key(k, pw, repo, Encryption::XChaCha20Poly1305);
        let opened = try_key(&back, &pw, repo).unwrap().unwrap();
        assert_eq!(opened.crypto.id(b"x"), crypto.crypto.id(b"x"));
        assert!(try_key(&back, &Password::new(b"wrong".to_vec()), repo).unwrap().is_none());
        // Bound to its repository: the same file copied into another does not open.
        assert!(try_key(&back, &pw, Id::hash(b"other")).unwrap().is_none());
        // Every flipped bit: refused by the decoder or by authentication.
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let opened = KeyFile::decode(&b).ok().map(|k| try_key(&k, &pw, repo));
            assert!(
                !matches!(opened, Some(Ok(Some(_)))),
                "bit {i} flipped and the key still opened"
            );
        }
    }

    #[test]
    fn absurd_kdf_parameters_are_refused_before_any_work() {
        let pw = Password::new(b"pw".to_vec());
        let (key, _) = new_master(&pw, fast(), 3, Id::hash(b"r"), Encryption::None).unwrap();
        for (at, value) in [(16, u32::MAX), (16, 1), (20, 1_000_000), (20, 0), (24, 0), (24, 4096)]
        {
            let mut b = key.encode();
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let err = KeyFile::decode(&b).unwrap_err();
            assert!(err.to_string().contains("KDF"), "{err}");
        }
    }

    #[test]
    fn ids_are_keyed_and_differ_between_repositories() {
        let (a, b) = (keys(), keys());
        assert_ne!(a.id(b"same"), b.id(b"same"));
        assert_ne!(a.id(b"same"), Crypto::plain().id(b"same"));
        assert_eq!(Crypto::plain().id(b"same"), Id::hash(b"same"));
        assert_ne!(a.gear_seed(7), b.gear_seed(7));
        assert_eq!(Crypto::plain().gear_seed(7), 7);
    }

    /// The bytes are XChaCha20-Poly1305's: RustCrypto's implementation opens what ring sealed,
    /// and seals the same bytes for the same key, nonce and associated data.
    #[test]
    fn sealed_bytes_are_standard_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let key = [3u8; 32];
        let nonce: [u8; NONCE_LEN] = core::array::from_fn(|i| i as u8);
        for len in [0usize, 1, 63, 64, 65, 4096, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut buf = vec![0u8; NONCE_LEN];
            buf.extend_from_slice(&plain);
            let ours = SealKey::XChaCha(Zeroizing::new(key));
            seal_with_nonce(&ours, nonce, b"ad", &mut buf, 0).unwrap();
            let rc = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
            let xn = chacha20poly1305::XNonce::from_slice(&nonce);
            let theirs = rc.encrypt(xn, Payload { msg: &plain, aad: b"ad" }).unwrap();
            assert_eq!(&buf[NONCE_LEN..], theirs.as_slice(), "{len} bytes");
            let mut out = Vec::new();
            open_into(&ours, b"ad", &buf, "test", &mut out).unwrap();
            assert_eq!(out, plain);
        }
    }

    /// The bytes are XAES-256-GCM's: C2SP's test vectors (`c2sp.org/XAES-256-GCM`), and every
    /// length round-trips while a flipped byte, another key or XChaCha20-Poly1305 of the same
    /// key fails.
    #[test]
    fn sealed_bytes_are_c2sp_xaes_256_gcm() {
        let vectors: [([u8; 32], &[u8], &str); 2] = [
            ([1; 32], b"", "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"),
            (
                [3; 32],
                b"c2sp.org/XAES-256-GCM",
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ];
        for (key, aad, expected) in vectors {
            let ours = SealKey::new(Encryption::Xaes256Gcm, Zeroizing::new(key));
            let mut buf = vec![0u8; NONCE_LEN];
            buf.extend_from_slice(b"XAES-256-GCM");
            seal_with_nonce(&ours, *b"ABCDEFGHIJKLMNOPQRSTUVWX", aad, &mut buf, 0).unwrap();
            let hex: String = buf[NONCE_LEN..].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected);
            let mut out = Vec::new();
            open_into(&ours, aad, &buf, "test", &mut out).unwrap();
            assert_eq!(out, b"XAES-256-GCM");
        }
        let key = SealKey::new(Encryption::Xaes256Gcm, Zeroizing::new([5; 32]));
        let other = SealKey::new(Encryption::Xaes256Gcm, Zeroizing::new([6; 32]));
        let chacha = SealKey::new(Encryption::XChaCha20Poly1305, Zeroizing::new([5; 32]));
        for len in [0usize, 1, 15, 16, 17, 4096, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut buf = vec![0u8; NONCE_LEN];
            buf.extend_from_slice(&plain);
            seal_in_place(&key, b"ad", &mut buf, 0).unwrap();
            assert_eq!(buf.len(), len + SEAL_OVERHEAD);
            let mut out = Vec::new();
            open_into(&key, b"ad", &buf, "test", &mut out).unwrap();
            assert_eq!(out, plain, "{len} bytes");
            assert!(open_into(&other, b"ad", &buf, "test", &mut out).is_err());
            assert!(open_into(&chacha, b"ad", &buf, "test", &mut out).is_err());
            assert!(open_into(&key, b"ae", &buf, "test", &mut out).is_err());
            for i in [0, NONCE_LEN - 1, NONCE_LEN, buf.len() - 1] {
                let mut flipped = buf.clone();
                flipped[i] ^= 0x10;
                assert!(open_into(&key, b"ad", &flipped, "test", &mut out).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn blobs_open_only_with_their_id_kind_codec_and_length() {
        for cipher in CIPHERS {
            blobs_open_only_with_their_id_kind_codec_and_length_of(cipher);
        }
    }

    fn blobs_open_only_with_their_id_kind_codec_and_length_of(cipher: Encryption) {
        let c = keys_of(cipher);
        let id = c.id(b"raw");
        let mut buf = vec![9u8; 5 + NONCE_LEN];
        buf.extend_from_slice(b"compressed bytes");
        c.seal_blob(id, 0, 1, 3, &mut buf, 5).unwrap();
        assert_eq!(&buf[..5], &[9u8; 5]);
        let stored = &buf[5..];
        assert_eq!(stored.len(), 16 + SEAL_OVERHEAD);
        let mut out = Vec::new();
        assert_eq!(c.open_blob(id, 0, 1, 3, stored, &mut out).unwrap(), b"compressed bytes");
        for (id2, kind, codec, len) in
            [(c.id(b"other"), 0, 1, 3), (id, 1, 1, 3), (id, 0, 0, 3), (id, 0, 1, 4)]
        {
            assert!(c.open_blob(id2, kind, codec, len, stored, &mut out).is_err());
        }
        assert!(keys_of(cipher).open_blob(id, 0, 1, 3, stored, &mut out).is_err());
        for i in 0..stored.len() {
            let mut s = stored.to_vec();
            s[i] ^= 0x40;
            assert!(c.open_blob(id, 0, 1, 3, &s, &mut out).is_err(), "byte {i}");
        }
        assert!(c.open_blob(id, 0, 1, 3, &stored[..SEAL_OVERHEAD - 1], &mut out).is_err());
    }

    #[test]
    fn files_open_only_as_their_kind_and_never_leak_plaintext() {
        for cipher in CIPHERS {
            files_open_only_as_their_kind_and_never_leak_plaintext_of(cipher);
        }
    }

    fn files_open_only_as_their_kind_and_never_leak_plaintext_of(cipher: Encryption) {
        let c = keys_of(cipher);
        let plain = b"STORESNP host name and /alf_data/contentstore".to_vec();
        let sealed = c.seal_file(FileKind::Manifest, 3, plain.clone()).unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"alf_data/"));
        assert_eq!(c.open_file(FileKind::Manifest, &sealed).unwrap().as_ref(), plain.as_slice());
        assert!(c.open_file(FileKind::Index, &sealed).is_err());
        assert!(keys().open_file(FileKind::Manifest, &sealed).is_err());
        assert!(Crypto::plain().open_file(FileKind::Manifest, &sealed).is_err());
        // A plain file where a sealed one belongs is refused, not read.
        assert!(c.open_file(FileKind::Manifest, &plain).is_err());
        for i in 0..sealed.len() {
            let mut s = sealed.clone();
            s[i] ^= 1;
            assert!(c.open_file(FileKind::Manifest, &s).is_err(), "byte {i}");
        }
        // The same object seals to the same bytes (its name is its content's); another does not.
        assert_eq!(c.seal_file(FileKind::Manifest, 3, plain.clone()).unwrap(), sealed);
        assert_ne!(c.seal_file(FileKind::Index, 3, plain.clone()).unwrap()[16..], sealed[16..]);
        // Plain repositories keep files as they are.
        let p = Crypto::plain();
        assert_eq!(p.seal_file(FileKind::Lock, 2, plain.clone()).unwrap(), plain);
    }
}
