//! Identity and admission: who a node is, and how it proves it belongs to the cluster.
//!
//! # Mechanism
//!
//! - **Cluster secret.** `hearsay keygen` writes 32 random bytes (hex) to a file. Every member
//!   is started with the same file (`--secret-file`). From it each member derives, with
//!   HKDF-SHA256, the same Ed25519 **cluster CA key**, and from that the same CA certificate.
//!   The secret itself is never sent anywhere, except to members inside these connections by a
//!   key rotation's install (see [`keyring`](super::keyring)).
//! - **Keyring.** An agent with a data dir holds a [`Keyring`] of secrets there: its
//!   certificate is issued under the primary's CA, and a peer's certificate is accepted when
//!   it chains to the CA of any installed key.
//! - **Node identity.** Each node has its own Ed25519 key pair, kept in its data directory
//!   (`node.key`), so it keeps its identity across restarts. Its [`NodeId`] is the 32-byte
//!   public key.
//! - **Node certificate.** At start the node issues itself a certificate for its own key,
//!   signed by the cluster CA key. Only a holder of the secret can make one. It is valid from
//!   an hour before the start (clocks of members may differ that much) to
//!   [`CERT_VALIDITY`] after it, and made again at every start.
//! - **Files.** The secret file and `node.key` must be readable by their owner only: like ssh
//!   with a private key, [`ClusterSecret::load`] and [`NodeIdentity::load_or_create`] refuse a
//!   file that its group or others can read (`chmod 600 FILE`).
//! - **Mutual TLS 1.3** (QUIC's handshake): both sides present their certificate and both
//!   verify that it chains to the cluster CA; a peer's NodeId is read from its verified
//!   certificate. A peer without the secret cannot complete a handshake, so it cannot join,
//!   publish, receive, or appear in any member list (membership only learns of peers through
//!   authenticated connections).
//!
//! See the README's threat model for what this does and does not protect against.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearsay_protocols::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::keyring::Keyring;
pub use super::signer::NodeSigner;
use super::signer::pkcs8_seed;

/// The name every node certificate carries and every client asks for: membership in the
/// cluster is what is verified, not a host name.
pub const SERVER_NAME: &str = "hearsay";

/// How long a node certificate stays valid after the start that issued it (ten years: a node
/// makes a new one at every start, so this only bounds how long a certificate taken from a
/// node can be used).
pub const CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// How far before its issue a node certificate is valid: the clock skew between members that
/// their handshakes tolerate.
pub const CERT_SKEW: std::time::Duration = std::time::Duration::from_secs(3600);

/// ALPN protocol id of hearsay's QUIC connections.
pub const ALPN: &[u8] = b"hearsay/1";

/// Why identity material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The secret file could not be read or written.
    #[error("cluster secret file {path}: {source}")]
    SecretIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret file does not hold a secret made by `hearsay keygen`.
    #[error("cluster secret file {0}: expected 64 hexadecimal characters, as written by `hearsay keygen`")]
    SecretFormat(PathBuf),
    /// The node key file could not be read or written.
    #[error("node key {path}: {source}")]
    KeyIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node key file does not hold an Ed25519 key.
    #[error("node key {0}: not an Ed25519 private key in PEM (delete it to make a new identity)")]
    KeyFormat(PathBuf),
    /// A secret file (the cluster secret, the node key, the API token) that others can read.
    #[error(
        "{path} is readable by others (mode {mode:o}): a secret must be readable by its owner only \
         (run `chmod 600 {path}`), or by the owner root and its group (`chmod 640`)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Certificate or TLS configuration failed (a bug or an unsupported platform).
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterSecret([u8; 32]);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A new random secret from the OS.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| IdentityError::Tls("OS random source failed".into()))?;
        Ok(ClusterSecret(bytes))
    }

    /// A secret from known bytes (tests, benchmarks, a key install from a peer).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClusterSecret(bytes)
    }

    /// The secret's bytes (what a key install sends to members, over mutual TLS only).
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The file form: 64 lowercase hex characters and a newline.
    pub fn to_file_text(&self) -> String {
        let mut s: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        s.push('\n');
        s
    }

    /// Parse the file form (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        if t.len() != 64 || !t.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterSecret(bytes))
    }

    /// Read a secret file; one that its group or others can read is refused (see
    /// [`check_private`]).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| IdentityError::SecretIo { path: path.to_owned(), source })?;
        check_private(path)?;
        Self::parse(&text).ok_or_else(|| IdentityError::SecretFormat(path.to_owned()))
    }

    /// Write a new secret file, readable by its owner only; refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), IdentityError> {
        write_private(path, self.to_file_text().as_bytes())
            .map_err(|source| IdentityError::SecretIo { path: path.to_owned(), source })
    }

    /// The cluster CA's Ed25519 key, derived with HKDF-SHA256.
    fn ca_key(&self) -> Result<KeyPair, IdentityError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hearsay/cluster-secret/v1");
        let prk = salt.extract(&self.0);
        let info: [&[u8]; 1] = [b"cluster-ca-ed25519"];
        let okm =
            prk.expand(&info, hkdf::HKDF_SHA256).map_err(|_| IdentityError::Tls("HKDF expand".into()))?;
        let mut seed = [0u8; 32];
        okm.fill(&mut seed).map_err(|_| IdentityError::Tls("HKDF fill".into()))?;
        key_from_seed(&seed)
    }
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// An Ed25519 key pair from its 32-byte seed, via the fixed PKCS#8 v1 wrapping (RFC 8410).
fn key_from_seed(seed: &[u8; 32]) -> Result<KeyPair, IdentityError> {
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
        .map_err(|e| IdentityError::Tls(format!("Ed25519 key from seed: {e}")))
}

/// Refuse a secret file that others may read (on Unix; elsewhere every file passes), as ssh
/// refuses such a private key. Like PostgreSQL's rule for its key file, the group may read a
/// file owned by root (`chown root:hearsay FILE; chmod 640 FILE`, the systemd unit's way to
/// give the service's group the key); otherwise only the owner may.
pub fn check_private(path: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|source| IdentityError::SecretIo { path: path.to_owned(), source })?;
        let mode = meta.mode() & 0o777;
        if !private_mode(mode, meta.uid()) {
            return Err(IdentityError::Permissions { path: path.to_owned(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether permission bits `mode` of a file owned by `uid` keep it private (see
/// [`check_private`]).
fn private_mode(mode: u32, uid: u32) -> bool {
    let others = mode & 0o007;
    let group = mode & 0o070;
    others == 0 && (group == 0 || (uid == 0 && group == 0o040))
}

/// Write `bytes` to a new file at `path`, readable by its owner only, and sync it.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A node's key pair and its cluster certificate, ready for TLS.
pub struct NodeIdentity {
    id: NodeId,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// The CA certificate of every installed key: a peer's certificate must chain to one.
    ca_certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").field("id", &self.id).finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Load the node key from `data_dir/node.key`, creating it on first start, and issue
    /// the node's certificate under the cluster secret.
    pub fn load_or_create(data_dir: &Path, secret: &ClusterSecret) -> Result<Self, IdentityError> {
        Self::load_or_create_with(data_dir, &Keyring::single(secret.clone()))
    }

    /// [`NodeIdentity::load_or_create`] under a keyring: the certificate is issued under its
    /// primary, and peers' certificates are accepted under any of its keys.
    pub fn load_or_create_with(data_dir: &Path, keyring: &Keyring) -> Result<Self, IdentityError> {
        let path = data_dir.join("node.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                check_private(&path)?;
                KeyPair::from_pem_and_sign_algo(&pem, &PKCS_ED25519)
                    .map_err(|_| IdentityError::KeyFormat(path.clone()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|source| IdentityError::KeyIo { path: path.clone(), source })?;
                let key =
                    KeyPair::generate_for(&PKCS_ED25519).map_err(|e| IdentityError::Tls(e.to_string()))?;
                write_private(&path, key.serialize_pem().as_bytes())
                    .map_err(|source| IdentityError::KeyIo { path: path.clone(), source })?;
                key
            }
            Err(source) => return Err(IdentityError::KeyIo { path, source }),
        };
        Self::issue(key, keyring)
    }

    /// A fresh identity that lives only in memory (benchmarks, tests).
    pub fn ephemeral(secret: &ClusterSecret) -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| IdentityError::Tls(e.to_string()))?;
        Self::issue(key, &Keyring::single(secret.clone()))
    }

    /// The same node key under another keyring: a certificate issued under its primary, and
    /// its keys' CAs to verify peers with (a key rotation step).
    pub fn reissue(&self, keyring: &Keyring) -> Result<Self, IdentityError> {
        let der = PrivatePkcs8KeyDer::from(self.key_der.clone());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519)
            .map_err(|e| IdentityError::Tls(format!("node key: {e}")))?;
        Self::issue(key, keyring)
    }

    fn issue(key: KeyPair, keyring: &Keyring) -> Result<Self, IdentityError> {
        let tls = |e: rcgen::Error| IdentityError::Tls(e.to_string());
        let raw: [u8; 32] =
            key.public_key_raw().try_into().map_err(|_| IdentityError::Tls("key is not Ed25519".into()))?;
        let id = NodeId::from_bytes(raw);
        let mut ca_certs = Vec::new();
        for secret in keyring.keys() {
            ca_certs.push(ca_params().self_signed(&secret.ca_key()?).map_err(tls)?.der().clone());
        }
        let ca_key = keyring.primary().ca_key()?;
        let ca_params = ca_params();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(tls)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("hearsay node {id}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = std::time::SystemTime::now();
        let not_before = now.checked_sub(CERT_SKEW).unwrap_or(now);
        let not_after = now.checked_add(CERT_VALIDITY).unwrap_or(now);
        params.not_before = time::OffsetDateTime::from(not_before);
        params.not_after = time::OffsetDateTime::from(not_after);
        let cert = params.signed_by(&key, &issuer).map_err(tls)?.der().clone();
        Ok(NodeIdentity { id, cert, key_der: key.serialize_der(), ca_certs })
    }

    /// This node's id (its public key).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The keys of this node's QUIC endpoint that must outlive a process: the stateless-reset
    /// key (64 bytes, HMAC-SHA256) and the connection-id key. Both are derived from the node
    /// key with HKDF-SHA256, so a restarted node recognises the connection ids of its previous
    /// life and answers a peer still sending on such a connection with a stateless reset that
    /// the peer accepts (RFC 9000 §10.3): the peer drops the stale connection at its first
    /// send instead of at its idle timeout. Only the holder of the node key can make them.
    pub fn endpoint_keys(&self) -> Result<([u8; 64], u64), IdentityError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hearsay/node-key/v1");
        let prk = salt.extract(&self.key_der);
        let derive = |label: &[u8], out: &mut [u8]| -> Result<(), IdentityError> {
            let info = [label];
            let okm =
                prk.expand(&info, Len(out.len())).map_err(|_| IdentityError::Tls("HKDF expand".into()))?;
            okm.fill(out).map_err(|_| IdentityError::Tls("HKDF fill".into()))
        };
        let mut reset = [0u8; 64];
        derive(b"quic-stateless-reset", &mut reset)?;
        let mut cid = [0u8; 8];
        derive(b"quic-connection-id", &mut cid)?;
        Ok((reset, u64::from_le_bytes(cid)))
    }

    /// What the machines sign and verify with: this node's Ed25519 key (see [`NodeSigner`]).
    pub fn signer(&self) -> Result<NodeSigner, IdentityError> {
        pkcs8_seed(&self.key_der)
            .and_then(|seed| NodeSigner::from_seed(self.id, &seed))
            .ok_or_else(|| IdentityError::Tls("node key for signing: not an Ed25519 key in PKCS#8".into()))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, IdentityError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.ca_certs {
            roots.add(ca.clone()).map_err(|e| IdentityError::Tls(e.to_string()))?;
        }
        Ok(Arc::new(roots))
    }

    /// TLS settings for accepting connections: present our certificate (under the primary
    /// key), require the client's, chaining to the CA of any installed key.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
                .build()
                .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key())
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS settings for connecting: verify the server's certificate against the CAs of the
    /// installed keys and present ours (under the primary key).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
                .build()
                .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key())
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// The cluster CA's parameters: the same on every member (the subject and key are what a
/// verifier matches; the validity is rcgen's fixed default).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hearsay cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The NodeId in a verified peer certificate: its Ed25519 public key.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = parsed.public_key();
    let raw: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().ok()?;
    Some(NodeId::from_bytes(raw))
}

/// The NodeId of the peer of an established connection.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_of(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_protocols::auth::{Authenticator, Signature};

    #[test]
    fn secret_file_round_trip_and_refusals() {
        let s = ClusterSecret::from_bytes([0xab; 32]);
        let text = s.to_file_text();
        assert_eq!(text.len(), 65);
        assert_eq!(ClusterSecret::parse(&format!("  {text}  ")).map(|p| p.0), Some([0xab; 32]));
        assert!(ClusterSecret::parse("abc").is_none());
        assert!(ClusterSecret::parse(&"zz".repeat(32)).is_none());
        assert!(ClusterSecret::parse(&"é".repeat(32)).is_none());
    }

    #[test]
    fn node_signatures_verify_under_the_node_id_only() {
        let secret = ClusterSecret::from_bytes([3; 32]);
        let (a, b) = (NodeIdentity::ephemeral(&secret).unwrap(), NodeIdentity::ephemeral(&secret).unwrap());
        let (sa, sb) = (a.signer().unwrap(), b.signer().unwrap());
        assert_eq!(sa.id(), a.id());
        let sig = sa.sign(b"alive");
        assert!(sb.verify(&a.id(), b"alive", &sig));
        assert!(!sb.verify(&b.id(), b"alive", &sig));
        assert!(!sb.verify(&a.id(), b"alivE", &sig));
        assert!(!sb.verify(&a.id(), b"alive", &Signature::ZERO));
    }

    #[test]
    fn the_ca_key_is_a_function_of_the_secret() {
        let a = ClusterSecret::from_bytes([1; 32]).ca_key().unwrap();
        let b = ClusterSecret::from_bytes([1; 32]).ca_key().unwrap();
        let c = ClusterSecret::from_bytes([2; 32]).ca_key().unwrap();
        assert_eq!(a.public_key_raw(), b.public_key_raw());
        assert_ne!(a.public_key_raw(), c.public_key_raw());
    }

    #[test]
    fn endpoint_keys_are_a_function_of_the_node_key() {
        let secret = ClusterSecret::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("hearsay-endpoint-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = NodeIdentity::load_or_create(&dir, &secret).unwrap();
        let again = NodeIdentity::load_or_create(&dir, &secret).unwrap();
        let other = NodeIdentity::ephemeral(&secret).unwrap();
        assert_eq!(
            a.endpoint_keys().unwrap(),
            again.endpoint_keys().unwrap(),
            "same key, same endpoint keys"
        );
        assert_ne!(a.endpoint_keys().unwrap().0, other.endpoint_keys().unwrap().0);
        assert_ne!(a.endpoint_keys().unwrap().1, other.endpoint_keys().unwrap().1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_certificate_carries_the_node_id_and_identities_persist() {
        let dir = std::env::temp_dir().join(format!("hearsay-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let secret = ClusterSecret::from_bytes([3; 32]);
        let first = NodeIdentity::load_or_create(&dir, &secret).unwrap();
        assert_eq!(node_id_of(&first.cert), Some(first.id()));
        let again = NodeIdentity::load_or_create(&dir, &secret).unwrap();
        assert_eq!(first.id(), again.id(), "the key file keeps the identity");
        std::fs::write(dir.join("node.key"), "garbage").unwrap();
        assert!(matches!(NodeIdentity::load_or_create(&dir, &secret), Err(IdentityError::KeyFormat(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_that_others_can_read_is_refused_like_ssh_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hearsay-secret-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        ClusterSecret::from_bytes([7; 32]).write_new(&path).unwrap();
        assert!(ClusterSecret::load(&path).is_ok(), "keygen writes 0600");
        for mode in [0o644, 0o604, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ClusterSecret::load(&path).unwrap_err();
            assert!(matches!(e, IdentityError::Permissions { mode: m, .. } if m == mode), "{e}");
            assert!(e.to_string().contains("chmod 600"), "the message says the fix: {e}");
        }
        let secret = ClusterSecret::from_bytes([7; 32]);
        NodeIdentity::load_or_create(&dir, &secret).unwrap();
        std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeIdentity::load_or_create(&dir, &secret).unwrap_err();
        assert!(matches!(e, IdentityError::Permissions { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_owner_or_roots_group_may_read_a_secret() {
        assert!(private_mode(0o600, 1000) && private_mode(0o400, 1000));
        assert!(!private_mode(0o640, 1000), "a user's file: owner only");
        assert!(private_mode(0o640, 0), "root's file: its group may read");
        assert!(!private_mode(0o660, 0), "but not write");
        assert!(!private_mode(0o604, 0) && !private_mode(0o644, 0), "others never");
    }

    #[test]
    fn node_certificates_are_valid_from_an_hour_ago_for_ten_years() {
        let id = NodeIdentity::ephemeral(&ClusterSecret::from_bytes([3; 32])).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(id.cert.as_ref()).unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let from = cert.validity().not_before.timestamp();
        let to = cert.validity().not_after.timestamp();
        assert!((now - 3600 - 60..=now - 3600 + 60).contains(&from), "not before {from}, now {now}");
        let ten_years = CERT_VALIDITY.as_secs() as i64;
        assert!((now + ten_years - 60..=now + ten_years + 60).contains(&to), "not after {to}, now {now}");
    }
}
