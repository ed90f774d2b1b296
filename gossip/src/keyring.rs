//! Gossip encryption: a keyring of AES-GCM keys (ring), with a primary key for sending.
//!
//! Envelope: `ENCRYPTION_VERSION nonce[12] ciphertext tag[16]` (29 bytes of overhead). The nonce of
//! every packet and stream comes from the [`NonceSource`] the pool was given: [`SystemNonces`] (the
//! operating system's CSPRNG) wherever a real key is in use, [`SimulatedNonces`] only in the
//! simulator. Never from the pool's seeded RNG: a seed that repeats (two pools, one seed) would repeat
//! nonces under one key, which breaks AES-GCM's confidentiality and lets a listener forge messages.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// First byte of an encrypted packet or stream. Its high bit keeps it apart from plaintext
/// protocol versions, so a node without a keyring reports it as an unsupported version.
pub(crate) const ENCRYPTION_VERSION: u8 = 0x81;
/// Bytes encryption adds: version, nonce and tag.
pub(crate) const ENCRYPTION_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Why a key or keyring operation was refused. The keyring is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// AES-192 (a 24-byte key) is valid for Consul but ring does not implement it.
    #[error(
        "24-byte (AES-192) gossip keys are not supported: ring implements only AES-128 and AES-256; use a 16- or 32-byte key"
    )]
    Aes192Unsupported,
    /// A key of a length that selects no AES variant.
    #[error("gossip key must be 16 or 32 bytes, got {len}")]
    InvalidKeyLength {
        /// The key's length in bytes.
        len: usize,
    },
    /// The key is not valid base64.
    #[error("gossip key is not valid base64")]
    InvalidBase64,
    /// `use` or `remove` named a key that is not installed.
    #[error("gossip key is not installed in the keyring")]
    KeyNotInstalled,
    /// Removing the primary key would leave the pool unable to send.
    #[error("removing the primary gossip key is not allowed; make another key primary first")]
    RemovePrimary,
    /// The system random source failed (keygen only).
    #[error("system random source failed")]
    RandomSource,
}

struct SecretKey {
    raw: Vec<u8>,
    aead: LessSafeKey,
}

impl SecretKey {
    fn new(raw: &[u8]) -> Result<Self, KeyringError> {
        let algorithm = match raw.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            24 => return Err(KeyringError::Aes192Unsupported),
            len => return Err(KeyringError::InvalidKeyLength { len }),
        };
        let unbound =
            UnboundKey::new(algorithm, raw).map_err(|_| KeyringError::InvalidKeyLength { len: raw.len() })?;
        Ok(SecretKey {
            raw: raw.to_vec(),
            aead: LessSafeKey::new(unbound),
        })
    }
}

/// The installed gossip keys. The primary key encrypts everything sent; every installed key is
/// tried when receiving, which is what makes rotation (install → use → remove) possible without
/// a partition.
pub struct Keyring {
    /// Index 0 is the primary key.
    keys: Vec<SecretKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring").field("keys", &self.keys.len()).finish()
    }
}

impl Clone for Keyring {
    fn clone(&self) -> Self {
        let keys = self
            .keys
            .iter()
            .filter_map(|k| SecretKey::new(&k.raw).ok())
            .collect();
        Keyring { keys }
    }
}

/// A keyring operation, applied on one member or carried to every member of a pool
/// ([`crate::Pool::start_keyring_op`]): Consul's `keyring -list|-install|-use|-remove`.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyringOp {
    /// Report the installed keys.
    List,
    /// Install a key as a secondary key.
    Install(Vec<u8>),
    /// Make an installed key the primary one.
    Use(Vec<u8>),
    /// Remove a secondary key.
    Remove(Vec<u8>),
}

impl KeyringOp {
    /// Whether the operation changes a keyring when it succeeds.
    pub fn changes_keys(&self) -> bool {
        !matches!(self, KeyringOp::List)
    }
}

impl std::fmt::Debug for KeyringOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            KeyringOp::List => "List",
            KeyringOp::Install(_) => "Install(..)",
            KeyringOp::Use(_) => "Use(..)",
            KeyringOp::Remove(_) => "Remove(..)",
        })
    }
}

/// Where a pool's AES-GCM nonces come from.
///
/// An implementation MUST NOT hand out the same nonce twice while the same key may be in use by any
/// member of the pool, in this process or another. Random 96-bit nonces from a CSPRNG meet this
/// within AES-GCM's usage limit (2^32 messages per key); a seeded PRNG does not, since two pools
/// given one seed draw the same sequence.
pub trait NonceSource: Send + std::fmt::Debug {
    /// A fresh nonce, or `None` when the source failed; the pool then sends nothing rather than
    /// risk a repeated nonce.
    fn next_nonce(&mut self) -> Option<[u8; NONCE_LEN]>;

    /// Whether the nonces are unpredictable and independent of any seed (a CSPRNG). Only such a
    /// source may be used with a real key.
    fn is_cryptographic(&self) -> bool;
}

/// Nonces from the operating system's CSPRNG (`ring::rand::SystemRandom`): the source for any pool
/// that talks to real peers, as the tokio runtime's does.
#[derive(Debug)]
pub struct SystemNonces {
    random: ring::rand::SystemRandom,
}

impl SystemNonces {
    /// A source over the system's random generator.
    pub fn new() -> Self {
        SystemNonces {
            random: ring::rand::SystemRandom::new(),
        }
    }
}

impl Default for SystemNonces {
    fn default() -> Self {
        SystemNonces::new()
    }
}

impl NonceSource for SystemNonces {
    fn next_nonce(&mut self) -> Option<[u8; NONCE_LEN]> {
        use ring::rand::SecureRandom as _;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        Some(nonce)
    }

    fn is_cryptographic(&self) -> bool {
        true
    }
}

/// SIMULATION ONLY: predictable nonces (a 32-bit stream number, then a 64-bit counter), so that a
/// simulated run stays reproducible bit for bit. Unique only among sources given distinct stream
/// numbers in one process; anyone who knows the scheme can predict them. Never use it with a key
/// that protects real traffic.
#[derive(Debug)]
pub struct SimulatedNonces {
    stream: u32,
    counter: u64,
}

impl SimulatedNonces {
    /// A counter-based source; `stream` must differ between the pools of one simulation.
    pub fn new(stream: u32) -> Self {
        SimulatedNonces { stream, counter: 0 }
    }
}

impl NonceSource for SimulatedNonces {
    fn next_nonce(&mut self) -> Option<[u8; NONCE_LEN]> {
        let counter = self.counter;
        // A wrapped counter would repeat a nonce: stop instead.
        self.counter = counter.checked_add(1)?;
        let mut nonce = [0u8; NONCE_LEN];
        let (stream, count) = nonce.split_at_mut(4);
        stream.copy_from_slice(&self.stream.to_be_bytes());
        count.copy_from_slice(&counter.to_be_bytes());
        Some(nonce)
    }

    fn is_cryptographic(&self) -> bool {
        false
    }
}

/// Why a sealed envelope was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not an encrypted envelope (plaintext or another version).
    NotEncrypted,
    /// No installed key authenticates it.
    NoKeyMatches,
}

impl Keyring {
    /// A keyring whose only (and primary) key is `primary`.
    pub fn new(primary: &[u8]) -> Result<Self, KeyringError> {
        Ok(Keyring {
            keys: vec![SecretKey::new(primary)?],
        })
    }

    /// A keyring from a base64 key, the form `consul keygen` prints and `encrypt` takes.
    pub fn from_base64(primary: &str) -> Result<Self, KeyringError> {
        Keyring::new(&decode_key(primary)?)
    }

    /// Adds `key` as a secondary key (no-op when already installed).
    pub fn install(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        let key = SecretKey::new(key)?;
        if !self.keys.iter().any(|k| k.raw == key.raw) {
            self.keys.push(key);
        }
        Ok(())
    }

    /// Makes an installed key the primary one.
    pub fn use_key(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        let pos = self.position(key)?;
        self.keys.swap(0, pos);
        Ok(())
    }

    /// Removes a secondary key. Removing the primary key is refused.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        match self.position(key)? {
            0 => Err(KeyringError::RemovePrimary),
            pos => {
                self.keys.remove(pos);
                Ok(())
            }
        }
    }

    /// Every installed key in base64, primary first.
    pub fn keys(&self) -> Vec<String> {
        self.keys.iter().map(|k| BASE64.encode(&k.raw)).collect()
    }

    /// The primary key in base64.
    pub fn primary(&self) -> String {
        self.keys
            .first()
            .map(|k| BASE64.encode(&k.raw))
            .unwrap_or_default()
    }

    /// Carries out `op`: install, use or remove a key, or nothing for a listing. The keyring is
    /// unchanged when an error is returned.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<(), KeyringError> {
        match op {
            KeyringOp::List => Ok(()),
            KeyringOp::Install(key) => self.install(key),
            KeyringOp::Use(key) => self.use_key(key),
            KeyringOp::Remove(key) => self.remove(key),
        }
    }

    fn position(&self, key: &[u8]) -> Result<usize, KeyringError> {
        self.keys
            .iter()
            .position(|k| k.raw == key)
            .ok_or(KeyringError::KeyNotInstalled)
    }

    /// Encrypts `plaintext` with the primary key under `nonce`. `aad` binds the envelope to its use
    /// (packet or stream), so one cannot be replayed as the other.
    pub(crate) fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + ENCRYPTION_OVERHEAD);
        out.push(ENCRYPTION_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let Some(primary) = self.keys.first() else {
            return Vec::new();
        };
        let mut body = out.split_off(1 + NONCE_LEN);
        // Sealing only fails when the input exceeds AES-GCM's ~64 GiB limit, far above any frame.
        if primary
            .aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .is_err()
        {
            return Vec::new();
        }
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts an envelope, trying every installed key.
    pub(crate) fn open(&self, aad: &[u8], data: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = data.split_first().ok_or(OpenError::NotEncrypted)?;
        if version != ENCRYPTION_VERSION {
            return Err(OpenError::NotEncrypted);
        }
        if rest.len() < NONCE_LEN + 16 {
            return Err(OpenError::NoKeyMatches);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        for key in &self.keys {
            let mut buf = sealed.to_vec();
            if let Ok(plain) = key.aead.open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut buf,
            ) {
                let len = plain.len();
                buf.truncate(len);
                return Ok(buf);
            }
        }
        Err(OpenError::NoKeyMatches)
    }
}

/// Decodes a base64 key and checks its length.
pub fn decode_key(key: &str) -> Result<Vec<u8>, KeyringError> {
    let raw = BASE64
        .decode(key.trim())
        .map_err(|_| KeyringError::InvalidBase64)?;
    SecretKey::new(&raw)?;
    Ok(raw)
}

/// A new 32-byte key in base64, like `consul keygen`. Uses the system's secure random source.
pub fn keygen() -> Result<String, KeyringError> {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| KeyringError::RandomSource)?;
    Ok(BASE64.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_nonces_differ_and_simulated_ones_count() {
        let (mut a, mut b) = (SystemNonces::new(), SystemNonces::new());
        let first = a.next_nonce().unwrap();
        assert_ne!(first, a.next_nonce().unwrap());
        assert_ne!(first, b.next_nonce().unwrap());
        assert!(a.is_cryptographic());

        let mut sim = SimulatedNonces::new(3);
        assert!(!sim.is_cryptographic());
        assert_eq!(sim.next_nonce().unwrap(), [0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sim.next_nonce().unwrap(), [0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut last = SimulatedNonces {
            stream: 1,
            counter: u64::MAX,
        };
        assert_eq!(last.next_nonce(), None, "a wrapped counter would repeat a nonce");
    }

    #[test]
    fn key_lengths() {
        assert!(Keyring::new(&[1; 16]).is_ok());
        assert!(Keyring::new(&[1; 32]).is_ok());
        let err = Keyring::new(&[1; 24]).unwrap_err();
        assert_eq!(err, KeyringError::Aes192Unsupported);
        assert!(err.to_string().contains("AES-192"));
        assert_eq!(
            Keyring::new(&[1; 5]).unwrap_err(),
            KeyringError::InvalidKeyLength { len: 5 }
        );
        assert_eq!(
            Keyring::from_base64("!!").unwrap_err(),
            KeyringError::InvalidBase64
        );
    }

    #[test]
    fn keygen_gives_32_random_bytes() {
        let a = keygen().unwrap();
        let b = keygen().unwrap();
        assert_ne!(a, b);
        assert_eq!(decode_key(&a).unwrap().len(), 32);
        Keyring::from_base64(&a).unwrap();
    }

    #[test]
    fn seal_open_and_rotation() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 16];
        let mut sender = Keyring::new(&k1).unwrap();
        let mut receiver = Keyring::new(&k2).unwrap();
        let sealed = sender.seal([7; 12], b"p", b"hello");
        assert_eq!(sealed.len(), 5 + ENCRYPTION_OVERHEAD);
        assert_eq!(receiver.open(b"p", &sealed), Err(OpenError::NoKeyMatches));
        receiver.install(&k1).unwrap();
        assert_eq!(receiver.open(b"p", &sealed).unwrap(), b"hello");
        // Another use's AAD does not authenticate.
        assert_eq!(receiver.open(b"s", &sealed), Err(OpenError::NoKeyMatches));
        assert_eq!(receiver.open(b"p", b"\x01plain"), Err(OpenError::NotEncrypted));

        // Rotation on the sender: install k2, use it, remove k1.
        sender.install(&k2).unwrap();
        sender.use_key(&k2).unwrap();
        assert_eq!(sender.remove(&k2), Err(KeyringError::RemovePrimary));
        sender.remove(&k1).unwrap();
        assert_eq!(sender.keys().len(), 1);
        assert_eq!(sender.use_key(&k1), Err(KeyringError::KeyNotInstalled));
        let sealed = sender.seal([8; 12], b"p", b"again");
        assert_eq!(receiver.open(b"p", &sealed).unwrap(), b"again");
        // Tampering is detected.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(receiver.open(b"p", &bad), Err(OpenError::NoKeyMatches));
        assert!(!format!("{receiver:?}").contains("AQEB"));
    }
}
