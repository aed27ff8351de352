//! The keyring: the cluster secrets an agent holds, for key rotation without downtime (as
//! Serf's `keys`).
//!
//! - **Primary and installed keys.** The ring holds 1 to [`MAX_KEYS`] secrets. The node's
//!   certificate is issued under the **primary**'s cluster CA; a peer's certificate is accepted
//!   when it chains to the CA of **any** installed secret (see [`identity`](super::identity)).
//! - **Fingerprints.** A key is named by its [`Fingerprint`]: the first 8 bytes of a SHA-256
//!   over a fixed label and the secret. It says nothing usable about the secret, so lists,
//!   logs and the API show fingerprints only, never a secret.
//! - **The file.** `DATA_DIR/keyring`, mode 0600, written to a temporary file that is synced
//!   and renamed over the old one (a crash leaves the old ring or the new one, never half of
//!   one). One line per key, `primary HEX` first, then `installed HEX`; `#` starts a comment.
//!   A file that others can read, or that does not parse, is a start error naming the file.
//! - **Operations** ([`Keyring::install`], [`Keyring::use_key`], [`Keyring::remove`]) are Serf's:
//!   install adds a key (installing one already there changes nothing), use makes an installed
//!   key the primary, remove deletes a key that is not the primary (removing one that is not
//!   there changes nothing), so every operation can be repeated safely.
//! - **Across the cluster** they travel as [`KeyRequest`]s on a bidirectional QUIC stream of the
//!   mutually authenticated connection to each member (see [`Transport::request`]); a request
//!   is at most [`MAX_REQUEST`] bytes and its reply at most [`MAX_REPLY`] bytes.
//!
//! [`Transport::request`]: super::Transport::request

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::{ClusterSecret, IdentityError, check_private};

/// Keys a ring holds at most (the primary included).
pub const MAX_KEYS: usize = 16;

/// The keyring's file name in the data dir.
pub const KEYRING_FILE: &str = "keyring";

/// The largest key request a peer may send (an install carries one 32-byte secret).
pub const MAX_REQUEST: usize = 256;

/// The largest key reply accepted from a peer (a list carries at most [`MAX_KEYS`]
/// fingerprints, an error a bounded sentence).
pub const MAX_REPLY: usize = 1024;

/// The longest error sentence a reply carries (longer ones are cut).
const MAX_ERROR: usize = 400;

/// A key's public name: 8 bytes of SHA-256 over a label and the secret, shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 8]);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || format!("`{s}` is not a key fingerprint (16 hex digits, as `hearsay keys list` shows)");
        if t.len() != 16 || !t.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl ClusterSecret {
    /// This secret's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"hearsay/key-fingerprint/v1");
        ctx.update(self.as_bytes());
        let digest = ctx.finish();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest.as_ref()[..8]);
        Fingerprint(out)
    }
}

/// Why a keyring operation or file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The ring holds [`MAX_KEYS`] keys already.
    #[error("the keyring is full ({MAX_KEYS} keys): remove a key first")]
    Full,
    /// `use` or a lookup of a key that is not installed.
    #[error("key {0} is not installed: install it first (`hearsay keys install FILE`)")]
    NotInstalled(Fingerprint),
    /// `remove` of the primary key.
    #[error("key {0} is the primary: make another key the primary first (`hearsay keys use FILE`)")]
    RemovePrimary(Fingerprint),
    /// The file could not be read or written.
    #[error("keyring {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a keyring.
    #[error("keyring {path} line {line}: {what} (delete the file to start again from --secret-file)")]
    Format {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0: the whole file).
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The transport did not take the new TLS settings.
    #[error("the transport refused the new keyring: {0}")]
    Transport(String),
    /// Others can read the file, or the certificate could not be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The cluster secrets a node holds; the first is the primary. Never empty.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<ClusterSecret>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.fingerprints()).finish()
    }
}

impl Keyring {
    /// A ring of one key, the primary.
    pub fn single(secret: ClusterSecret) -> Keyring {
        Keyring { keys: vec![secret] }
    }

    /// The primary: the key this node's certificate is issued under.
    pub fn primary(&self) -> &ClusterSecret {
        &self.keys[0]
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[ClusterSecret] {
        &self.keys
    }

    /// Every key's fingerprint, the primary first.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.keys.iter().map(ClusterSecret::fingerprint).collect()
    }

    /// Whether a key with this fingerprint is installed.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.keys.iter().any(|k| k.fingerprint() == *fp)
    }

    /// Add a key (not the primary). True if it was not installed yet.
    pub fn install(&mut self, secret: ClusterSecret) -> Result<bool, KeyringError> {
        if self.contains(&secret.fingerprint()) {
            return Ok(false);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(secret);
        Ok(true)
    }

    /// Make the installed key `fp` the primary. True if it was not the primary yet.
    pub fn use_key(&mut self, fp: &Fingerprint) -> Result<bool, KeyringError> {
        let i = self.position(fp)?;
        if i == 0 {
            return Ok(false);
        }
        let key = self.keys.remove(i);
        self.keys.insert(0, key);
        Ok(true)
    }

    /// Delete the key `fp`, which must not be the primary. True if it was installed.
    pub fn remove(&mut self, fp: &Fingerprint) -> Result<bool, KeyringError> {
        match self.position(fp) {
            Ok(0) => Err(KeyringError::RemovePrimary(*fp)),
            Ok(i) => {
                self.keys.remove(i);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    fn position(&self, fp: &Fingerprint) -> Result<usize, KeyringError> {
        self.keys.iter().position(|k| k.fingerprint() == *fp).ok_or(KeyringError::NotInstalled(*fp))
    }

    /// The file form (see the module docs).
    pub fn to_file_text(&self) -> String {
        let mut s = String::from(
            "# hearsay keyring: managed by `hearsay keys`; the primary key signs this node's certificate\n",
        );
        for (i, k) in self.keys.iter().enumerate() {
            s.push_str(if i == 0 { "primary " } else { "installed " });
            s.push_str(&k.to_file_text());
        }
        s
    }

    /// Parse the file form; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Keyring, KeyringError> {
        let format = |line: usize, what: String| KeyringError::Format { path: path.to_owned(), line, what };
        let mut keys: Vec<ClusterSecret> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, hex) = line.split_once(' ').unwrap_or((line, ""));
            let secret = ClusterSecret::parse(hex).ok_or_else(|| {
                format(n + 1, "expected `primary HEX` or `installed HEX` (64 hex digits)".into())
            })?;
            match kind {
                "primary" if keys.is_empty() => {}
                "primary" => return Err(format(n + 1, "the primary must be the first key".into())),
                "installed" if !keys.is_empty() => {}
                "installed" => return Err(format(n + 1, "the first key must be the primary".into())),
                _ => return Err(format(n + 1, format!("unknown kind `{kind}`"))),
            }
            if keys.iter().any(|k| k.fingerprint() == secret.fingerprint()) {
                return Err(format(n + 1, "a key listed twice".into()));
            }
            if keys.len() >= MAX_KEYS {
                return Err(format(n + 1, format!("more than {MAX_KEYS} keys")));
            }
            keys.push(secret);
        }
        if keys.is_empty() {
            return Err(format(0, "no keys".into()));
        }
        Ok(Keyring { keys })
    }

    /// Read a keyring file: `Ok(None)` if there is none; a file that others can read is
    /// refused as a secret file is.
    pub fn load(path: &Path) -> Result<Option<Keyring>, KeyringError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyringError::Io { path: path.to_owned(), source }),
        };
        check_private(path)?;
        Keyring::parse(&text, path).map(Some)
    }

    /// Write the ring to `path` atomically: a temporary file beside it (mode 0600), synced,
    /// renamed over it, and the directory synced.
    pub fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let io = |source| KeyringError::Io { path: path.to_owned(), source };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        super::identity::write_private(&tmp, self.to_file_text().as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The ring in `data_dir`, or, when there is none yet, a ring of `secret` alone, written
    /// there. The second value is true when a ring was found that does not hold `secret` (the
    /// caller warns: the ring wins over `--secret-file`).
    pub fn load_or_init(data_dir: &Path, secret: &ClusterSecret) -> Result<(Keyring, bool), KeyringError> {
        let path = data_dir.join(KEYRING_FILE);
        match Keyring::load(&path)? {
            Some(ring) => {
                let missing = !ring.contains(&secret.fingerprint());
                Ok((ring, missing))
            }
            None => {
                let ring = Keyring::single(secret.clone());
                ring.save(&path)?;
                Ok((ring, false))
            }
        }
    }
}

/// A key operation one member asks of another, on a bidirectional stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyRequest {
    /// Install this secret.
    Install([u8; 32]),
    /// Make this installed key the primary.
    Use(Fingerprint),
    /// Remove this key.
    Remove(Fingerprint),
    /// Which keys are installed.
    List,
}

/// The answer to a [`KeyRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyReply {
    /// Done (or nothing to do).
    Done,
    /// Refused, with a sentence saying why.
    Refused(String),
    /// The installed keys, the primary first.
    Keys(Vec<Fingerprint>),
}

/// The first byte of a key request or reply: its format's version.
const KEY_WIRE_VERSION: u8 = 1;

impl KeyRequest {
    /// The bytes sent.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![KEY_WIRE_VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Parse what a peer sent (at most [`MAX_REQUEST`] bytes).
    pub fn decode(bytes: &[u8]) -> Option<KeyRequest> {
        if bytes.len() > MAX_REQUEST {
            return None;
        }
        let (&v, body) = bytes.split_first()?;
        if v != KEY_WIRE_VERSION {
            return None;
        }
        postcard::from_bytes(body).ok()
    }
}

impl KeyReply {
    /// The bytes sent (an error sentence cut to a bound).
    pub fn encode(&self) -> Vec<u8> {
        let reply = match self {
            KeyReply::Refused(s) if s.len() > MAX_ERROR => {
                let mut end = MAX_ERROR;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                KeyReply::Refused(s[..end].to_string())
            }
            other => other.clone(),
        };
        let mut out = vec![KEY_WIRE_VERSION];
        out.extend(postcard::to_allocvec(&reply).unwrap_or_default());
        out
    }

    /// Parse what a peer answered (at most [`MAX_REPLY`] bytes, at most [`MAX_KEYS`] keys).
    pub fn decode(bytes: &[u8]) -> Option<KeyReply> {
        if bytes.len() > MAX_REPLY {
            return None;
        }
        let (&v, body) = bytes.split_first()?;
        if v != KEY_WIRE_VERSION {
            return None;
        }
        match postcard::from_bytes(body).ok()? {
            KeyReply::Keys(k) if k.len() > MAX_KEYS => None,
            r => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterSecret {
        ClusterSecret::from_bytes([b; 32])
    }

    fn temp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearsay-keyring-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn install_use_remove_follow_serf() {
        let mut ring = Keyring::single(key(1));
        let (a, b) = (key(1).fingerprint(), key(2).fingerprint());
        assert_ne!(a, b);
        assert!(ring.install(key(2)).unwrap());
        assert!(!ring.install(key(2)).unwrap(), "installing again changes nothing");
        assert!(matches!(ring.remove(&a), Err(KeyringError::RemovePrimary(f)) if f == a));
        assert!(matches!(ring.use_key(&key(3).fingerprint()), Err(KeyringError::NotInstalled(_))));
        assert!(ring.use_key(&b).unwrap());
        assert_eq!(ring.primary().fingerprint(), b);
        assert!(ring.remove(&a).unwrap());
        assert!(!ring.remove(&a).unwrap(), "removing again changes nothing");
        assert_eq!(ring.fingerprints(), vec![b]);
        for i in 0..(MAX_KEYS as u8 - 1) {
            ring.install(key(10 + i)).unwrap();
        }
        assert!(matches!(ring.install(key(99)), Err(KeyringError::Full)));
    }

    #[test]
    fn fingerprints_parse_back_and_hide_the_secret() {
        let fp = key(7).fingerprint();
        let text = fp.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert!(!key(7).to_file_text().contains(&text));
        assert!("xyz".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(8).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_file_round_trips_atomically_with_mode_0600() {
        let dir = temp("roundtrip");
        let path = dir.join(KEYRING_FILE);
        assert!(Keyring::load(&path).unwrap().is_none());
        let (ring, missing) = Keyring::load_or_init(&dir, &key(1)).unwrap();
        assert!(!missing);
        assert_eq!(ring.fingerprints(), vec![key(1).fingerprint()]);
        let mut ring = ring;
        ring.install(key(2)).unwrap();
        ring.use_key(&key(2).fingerprint()).unwrap();
        ring.save(&path).unwrap();
        assert!(!path.with_extension("tmp").exists(), "the temporary file was renamed");
        let (again, missing) = Keyring::load_or_init(&dir, &key(3)).unwrap();
        assert!(missing, "the ring wins over another --secret-file, which is reported");
        assert_eq!(again.fingerprints(), vec![key(2).fingerprint(), key(1).fingerprint()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Keyring::load(&path).unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let p = Path::new("/data/keyring");
        let good = key(1).to_file_text();
        for (text, needle) in [
            (String::new(), "no keys"),
            ("# only a comment\n".to_string(), "no keys"),
            (format!("installed {good}"), "first key must be the primary"),
            (format!("primary {good}primary {good}"), "primary must be the first"),
            (format!("primary {good}installed {good}"), "listed twice"),
            ("primary abc\n".to_string(), "64 hex digits"),
            (format!("spare {good}"), "unknown kind"),
        ] {
            let e = Keyring::parse(&text, p).unwrap_err();
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().contains("/data/keyring"), "names the file: {e}");
        }
    }

    #[test]
    fn requests_and_replies_are_bounded() {
        for r in [KeyRequest::Install([5; 32]), KeyRequest::Use(key(1).fingerprint()), KeyRequest::List] {
            assert_eq!(KeyRequest::decode(&r.encode()), Some(r));
        }
        assert_eq!(KeyRequest::decode(&[]), None);
        assert_eq!(KeyRequest::decode(&[9, 0]), None, "another version");
        assert_eq!(KeyRequest::decode(&vec![1; MAX_REQUEST + 1]), None);
        let long = KeyReply::Refused("é".repeat(1000));
        let KeyReply::Refused(cut) = KeyReply::decode(&long.encode()).unwrap() else { panic!() };
        assert!(cut.len() <= MAX_ERROR);
        let many = KeyReply::Keys(vec![key(1).fingerprint(); MAX_KEYS + 1]);
        assert_eq!(KeyReply::decode(&many.encode()), None);
        let ok = KeyReply::Keys(vec![key(1).fingerprint(); 2]);
        assert_eq!(KeyReply::decode(&ok.encode()), Some(ok));
    }
}
