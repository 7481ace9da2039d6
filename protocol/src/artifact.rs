//! Signed agent builds. An operator signs a build offline with an Ed25519 key
//! (`hearth-control-plane artifact sign`); the control plane checks the signature against
//! its configured public keys when the build is uploaded, and the agent checks it again
//! against the keys in *its own* configuration before it installs anything — so a control
//! plane that was taken over cannot push code the operator did not sign.
//!
//! What is signed is a short text statement naming the build's SHA-256, size, version and
//! architecture ([`Manifest::statement`]), so a signature cannot be moved to another
//! version or architecture. [`check_binary`] checks a build against its manifest: digest,
//! size, and the ELF header's machine (a wrong-architecture build is refused before it is
//! ever executed).
//!
//! ```
//! use hearth_protocol::artifact::{self, Arch, Manifest};
//! let key = artifact::SigningKey::from_bytes(&[7; 32]);
//! let build = artifact::tests_support::elf(Arch::X86_64, 4096);
//! let signed = artifact::sign(&key, Manifest::of(&build, "0.5.0", Arch::X86_64).unwrap());
//! let trusted = [key.verifying_key()];
//! artifact::verify(&signed, &trusted).unwrap();
//! artifact::check_binary(&build, &signed.manifest).unwrap();
//! let mut tampered = build.clone();
//! tampered[100] ^= 1;
//! assert!(artifact::check_binary(&tampered, &signed.manifest).is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format name in every signed manifest.
pub const FORMAT: &str = "hearth-agent-artifact/1";

/// A CPU architecture an agent build is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: &'static [Arch] = &[Arch::X86_64, Arch::Aarch64];

    pub const fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The ELF `e_machine` of a build for it.
    const fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The architecture this program was built for, if it is one of [`Arch::ALL`].
    pub fn this() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ArtifactError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ArtifactError::UnknownArch(s.chars().take(32).collect()))
    }
}

/// A release version, `MAJOR.MINOR.PATCH` with an optional `-pre` part; ordered as SemVer
/// orders them (a pre-release before its release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    core: (u64, u64, u64),
    pre: Option<String>,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, ArtifactError> {
        let bad = || ArtifactError::BadVersion(s.chars().take(64).collect());
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let mut parts = core.split('.').map(|p| {
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(bad())
            } else {
                p.parse::<u64>().map_err(|_| bad())
            }
        });
        let (Some(a), Some(b), Some(c), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if let Some(p) = pre {
            if p.is_empty() || p.len() > 40 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
                return Err(bad());
            }
        }
        Ok(Version { core: (a?, b?, c?), pre: pre.map(str::to_owned) })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.core.cmp(&other.core).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
    }
}

/// What a signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// SHA-256 of the build, lower-case hex.
    pub sha256: String,
    pub size: u64,
    pub version: String,
    pub arch: Arch,
}

impl Manifest {
    /// The manifest of a build (the version is checked).
    pub fn of(bytes: &[u8], version: &str, arch: Arch) -> Result<Manifest, ArtifactError> {
        Version::parse(version)?;
        Ok(Manifest {
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            version: version.into(),
            arch,
        })
    }

    /// The exact text that is signed.
    pub fn statement(&self) -> String {
        format!("{FORMAT}\nsha256 {}\nsize {}\nversion {}\narch {}\n", self.sha256, self.size, self.version, self.arch)
    }
}

/// A manifest with its signature, as the `.sig.json` file next to a build holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Always [`FORMAT`].
    pub format: String,
    #[serde(flatten)]
    pub manifest: Manifest,
    /// [`key_id`] of the key that signed.
    pub key_id: String,
    /// The Ed25519 signature of [`Manifest::statement`], base64.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("unknown architecture {0:?} (known: x86_64, aarch64)")]
    UnknownArch(String),
    #[error("version {0:?} is not MAJOR.MINOR.PATCH[-pre]")]
    BadVersion(String),
    #[error("the signature file is not a {FORMAT} manifest")]
    BadFormat,
    #[error("signed by key {0}, which is not one of the trusted keys")]
    UnknownKey(String),
    #[error("the signature does not verify: the manifest was changed or signed by another key")]
    BadSignature,
    #[error("the build is {actual} bytes, the manifest says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the build's SHA-256 is {actual}, the manifest says {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the build is not an ELF executable")]
    NotElf,
    #[error("the build is an ELF for machine {machine}, not {arch}")]
    WrongArch { arch: Arch, machine: u16 },
    #[error("a key is 32 bytes in base64: {0}")]
    BadKey(String),
}

/// An Ed25519 public key (32 bytes). Its point is checked when a signature is verified: a
/// key that is not a curve point verifies nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> VerifyingKey {
        VerifyingKey(*bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", key_id(self))
    }
}

/// An Ed25519 signing key, from its 32-byte seed (the secret key file holds the seed).
pub struct SigningKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn from_bytes(seed: &[u8; 32]) -> SigningKey {
        // A 32-byte seed is always a valid key: the call cannot fail for this length.
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte Ed25519 seed");
        SigningKey { seed: *seed, pair }
    }

    /// The seed, as written to the secret key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.seed
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey(public)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, secret not shown)", key_id(&self.verifying_key()))
    }
}

/// A short name for a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A public key from its base64 text (the form configurations hold).
pub fn public_key(text: &str) -> Result<VerifyingKey, ArtifactError> {
    let bytes = B64.decode(text.trim()).map_err(|e| ArtifactError::BadKey(e.to_string()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ArtifactError::BadKey("not 32 bytes".into()))?;
    Ok(VerifyingKey::from_bytes(&bytes))
}

/// A signing key from its base64 text (the secret key file's content).
pub fn signing_key(text: &str) -> Result<SigningKey, ArtifactError> {
    let bytes = B64.decode(text.trim()).map_err(|e| ArtifactError::BadKey(e.to_string()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ArtifactError::BadKey("not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Base64 of a key's bytes (what [`public_key`] and [`signing_key`] read).
pub fn encode_key(bytes: &[u8; 32]) -> String {
    B64.encode(bytes)
}

/// Signs a manifest.
pub fn sign(key: &SigningKey, manifest: Manifest) -> SignedManifest {
    let signature = key.pair.sign(manifest.statement().as_bytes());
    SignedManifest {
        format: FORMAT.into(),
        key_id: key_id(&key.verifying_key()),
        signature: B64.encode(signature.as_ref()),
        manifest,
    }
}

/// Checks the signature against the trusted keys (by key id, then the signature itself).
pub fn verify(signed: &SignedManifest, trusted: &[VerifyingKey]) -> Result<(), ArtifactError> {
    if signed.format != FORMAT {
        return Err(ArtifactError::BadFormat);
    }
    Version::parse(&signed.manifest.version)?;
    let key = trusted
        .iter()
        .find(|k| key_id(k) == signed.key_id)
        .ok_or_else(|| ArtifactError::UnknownKey(signed.key_id.chars().take(32).collect()))?;
    let bytes = B64.decode(&signed.signature).map_err(|_| ArtifactError::BadSignature)?;
    if bytes.len() != 64 {
        return Err(ArtifactError::BadSignature);
    }
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(signed.manifest.statement().as_bytes(), &bytes)
        .map_err(|_| ArtifactError::BadSignature)
}

/// Checks a build against its manifest: size, digest, and that it is an ELF for the
/// manifest's architecture.
pub fn check_binary(bytes: &[u8], m: &Manifest) -> Result<(), ArtifactError> {
    if bytes.len() as u64 != m.size {
        return Err(ArtifactError::SizeMismatch { expected: m.size, actual: bytes.len() as u64 });
    }
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != m.sha256 {
        return Err(ArtifactError::DigestMismatch { expected: m.sha256.clone(), actual });
    }
    check_elf(bytes, m.arch)
}

/// [`check_binary`] for a build read from `reader` (a file), without holding it in memory.
pub fn check_reader(mut reader: impl std::io::Read, m: &Manifest) -> Result<(), ArtifactError> {
    let (sha256, size, head) = digest_reader(&mut reader).map_err(|_| ArtifactError::NotElf)?;
    if size != m.size {
        return Err(ArtifactError::SizeMismatch { expected: m.size, actual: size });
    }
    if sha256 != m.sha256 {
        return Err(ArtifactError::DigestMismatch { expected: m.sha256.clone(), actual: sha256 });
    }
    check_elf(&head, m.arch)
}

/// The SHA-256 (hex), the size and the first 64 bytes of what `reader` holds.
pub fn digest_reader(mut reader: impl std::io::Read) -> std::io::Result<(String, u64, Vec<u8>)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    let mut head = Vec::with_capacity(64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if head.len() < 64 {
            let take = (64 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size, head))
}

/// The ELF header's class, byte order and machine match `arch` (64-bit little-endian).
pub fn check_elf(bytes: &[u8], arch: Arch) -> Result<(), ArtifactError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(ArtifactError::NotElf);
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != arch.elf_machine() {
        return Err(ArtifactError::WrongArch { arch, machine });
    }
    Ok(())
}

/// The task action of an agent update. It is not in the catalog: only a rollout created by
/// an operator makes such a task, and the agent runs it itself (no playbook).
pub const UPDATE_ACTION: &str = "agent.update";

/// The parameters of an [`UPDATE_ACTION`] task: the version, its signed builds (one per
/// architecture; the agent takes its own), and whether the rollout allows a downgrade. The
/// agent downloads `{AGENT_ARTIFACTS_PATH}/{sha256}` from the control plane it enrolled
/// with and checks everything again with the keys of its own configuration.
///
/// [`AGENT_ARTIFACTS_PATH`]: crate::api::AGENT_ARTIFACTS_PATH
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentUpdate {
    pub version: String,
    pub builds: Vec<SignedManifest>,
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl AgentUpdate {
    /// The build for `arch`, if the update has one.
    pub fn build_for(&self, arch: Arch) -> Option<&SignedManifest> {
        self.builds.iter().find(|b| b.manifest.arch == arch)
    }
}

/// Builds that look like ELF executables, for tests and examples.
#[doc(hidden)]
pub mod tests_support {
    use super::Arch;

    /// `len` bytes starting with a 64-bit little-endian ELF header for `arch`.
    pub fn elf(arch: Arch, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(64)];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&arch.elf_machine().to_le_bytes());
        for (i, x) in b.iter_mut().enumerate().skip(64) {
            *x = (i % 251) as u8;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::elf;
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_signed_build_verifies_and_anything_changed_does_not() {
        let build = elf(Arch::Aarch64, 10_000);
        let signed = sign(&key(1), Manifest::of(&build, "1.2.3", Arch::Aarch64).unwrap());
        let trusted = [key(1).verifying_key()];
        verify(&signed, &trusted).unwrap();
        check_binary(&build, &signed.manifest).unwrap();
        check_reader(&build[..], &signed.manifest).unwrap();
        let mut tampered = build.clone();
        tampered[5000] ^= 1;
        assert!(matches!(check_reader(&tampered[..], &signed.manifest), Err(ArtifactError::DigestMismatch { .. })));
        assert!(matches!(
            check_reader(&build[..9000], &signed.manifest),
            Err(ArtifactError::SizeMismatch { expected: 10_000, actual: 9000 })
        ));

        // Another version or architecture under the same signature.
        let mut moved = signed.clone();
        moved.manifest.version = "1.2.4".into();
        assert_eq!(verify(&moved, &trusted), Err(ArtifactError::BadSignature));
        let mut moved = signed.clone();
        moved.manifest.arch = Arch::X86_64;
        assert_eq!(verify(&moved, &trusted), Err(ArtifactError::BadSignature));
        // A key that is not trusted, or a signature made by another key under its id.
        assert!(matches!(verify(&signed, &[key(2).verifying_key()]), Err(ArtifactError::UnknownKey(_))));
        let mut forged = sign(&key(2), signed.manifest.clone());
        forged.key_id = signed.key_id.clone();
        assert_eq!(verify(&forged, &trusted), Err(ArtifactError::BadSignature));
        let mut unsigned = signed.clone();
        unsigned.signature = String::new();
        assert_eq!(verify(&unsigned, &trusted), Err(ArtifactError::BadSignature));
        // Truncated, tampered, wrong architecture, not an executable.
        assert!(matches!(check_binary(&build[..9_000], &signed.manifest), Err(ArtifactError::SizeMismatch { .. })));
        let mut tampered = build.clone();
        tampered[5_000] ^= 0xff;
        assert!(matches!(check_binary(&tampered, &signed.manifest), Err(ArtifactError::DigestMismatch { .. })));
        let x86 = elf(Arch::X86_64, 10_000);
        assert!(matches!(check_elf(&x86, Arch::Aarch64), Err(ArtifactError::WrongArch { machine: 62, .. })));
        assert_eq!(check_elf(b"#!/bin/sh\nrm -rf /\n", Arch::X86_64), Err(ArtifactError::NotElf));
    }

    #[test]
    fn versions_parse_and_order_like_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("0.10.0") > v("0.9.9"));
        assert!(v("1.0.0") > v("1.0.0-rc.1"));
        assert!(v("1.0.0-rc.2") > v("1.0.0-rc.1"));
        for bad in ["1.0", "1.0.0.0", "v1.0.0", "1..0", "1.0.0-", "1.0.0-a b", ""] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_round_trip_as_base64() {
        let k = key(9);
        let public = encode_key(k.verifying_key().as_bytes());
        assert_eq!(public_key(&public).unwrap(), k.verifying_key());
        assert_eq!(signing_key(&encode_key(&k.to_bytes())).unwrap().to_bytes(), k.to_bytes());
        assert!(public_key("not base64!").is_err());
        assert_eq!(key_id(&k.verifying_key()).len(), 16);
    }

    #[test]
    fn keys_are_plain_ed25519_as_in_rfc_8032() {
        // RFC 8032, section 7.1, test 1: the seed gives the published public key.
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let public = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
        assert_eq!(SigningKey::from_bytes(&seed).verifying_key().as_bytes().as_slice(), public.as_slice());
        // A key that is not a curve point verifies nothing.
        let signed = sign(&key(1), Manifest::of(&elf(Arch::X86_64, 100), "1.0.0", Arch::X86_64).unwrap());
        let mut not_a_point = [0xffu8; 32];
        not_a_point[31] = 0x7f;
        let bogus = VerifyingKey::from_bytes(&not_a_point);
        let relabelled = SignedManifest { key_id: key_id(&bogus), ..signed };
        assert_eq!(verify(&relabelled, &[bogus]), Err(ArtifactError::BadSignature));
    }
}
