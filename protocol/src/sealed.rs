//! Secrets sealed to one appliance: the form a configuration secret travels in, so that
//! neither the broker's persistence nor its memory ever holds it in clear.
//!
//! A sealed value replaces the secret's string in a configuration document:
//!
//! ```json
//! {"$sealed": {"v": 1, "epk": "<base64>", "nonce": "<base64>", "ct": "<base64>"}}
//! ```
//!
//! **Format 1.** The recipient is the appliance's P-256 key (the key of its certificate,
//! generated on the appliance at enrollment; its private half never leaves it). The sender
//! makes an ephemeral P-256 key `e` per value and computes
//!
//! - `z` = ECDH(`e`, appliance public key), the x-coordinate (32 bytes);
//! - `k` = HKDF-SHA256(salt = `epk` ‖ appliance public key, both SEC1 uncompressed, ikm =
//!   `z`, info = [`info`]`(appliance id, path)`), 32 bytes;
//! - `ct` = AES-256-GCM(`k`, `nonce` (12 random bytes), the secret's UTF-8, aad = the same
//!   info), the 16-byte tag appended.
//!
//! `epk` is the ephemeral public key (SEC1 uncompressed, 65 bytes); base64 is the standard
//! alphabet with padding. The info binds a value to the format, to the appliance and to the
//! value's place in the document (`mail.relay.password`, `users[0].password`), so a value
//! cannot be opened by another appliance nor moved to another field. A test vector lives in
//! `testdata/golden/sealed-v1.json`.
//!
//! ```
//! use hearth_protocol::sealed::{OpeningKey, seal, open};
//! use hearth_protocol::ApplianceId;
//!
//! let key = OpeningKey::generate();
//! let appliance = ApplianceId::new();
//! let sealed = seal(&key.sealing_key(), appliance, "mail.relay.password", "hunter2").unwrap();
//! assert!(!sealed.to_string().contains("hunter2"));
//! assert_eq!(open(&key, appliance, "mail.relay.password", &sealed).unwrap().expose(), "hunter2");
//! assert!(open(&key, ApplianceId::new(), "mail.relay.password", &sealed).is_err());
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::ids::ApplianceId;
use crate::Secret;

/// The key of a sealed value in a document.
pub const SEALED: &str = "$sealed";
/// The format this module writes.
pub const FORMAT: u32 = 1;
/// The formats this module can open (what an agent announces at enrollment).
pub const FORMATS: &[u32] = &[FORMAT];

const INFO_PREFIX: &[u8] = b"hearth-sealed/1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a P-256 public key (SEC1) or private key (PKCS#8).
    #[error("not a P-256 key")]
    BadKey,
    /// Malformed, of an unknown format, for another appliance or place, tampered with, or
    /// sealed to another key: which one is deliberately not said.
    #[error("{path}: a sealed value cannot be opened")]
    Open { path: String },
    #[error("encryption failed")]
    Seal,
}

/// The public half: what the control plane seals to.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey(PublicKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", STANDARD.encode(self.to_sec1_bytes()))
    }
}

impl SealingKey {
    /// From a SEC1 point (uncompressed, 65 bytes, as in a certificate; compressed accepted).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        PublicKey::from_sec1_bytes(bytes).map(SealingKey).map_err(|_| SealError::BadKey)
    }

    /// The SEC1 uncompressed point (65 bytes).
    pub fn to_sec1_bytes(&self) -> Vec<u8> {
        self.0.to_encoded_point(false).as_bytes().to_vec()
    }
}

/// The private half: the appliance's own key, which opens what was sealed to it.
#[derive(Clone)]
pub struct OpeningKey(SecretKey);

impl std::fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpeningKey([redacted])")
    }
}

impl OpeningKey {
    /// From the appliance's `key.pem` (PKCS#8, as written at enrollment).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SealError> {
        SecretKey::from_pkcs8_pem(pem).map(OpeningKey).map_err(|_| SealError::BadKey)
    }

    /// From a raw 32-byte scalar (test vectors).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        SecretKey::from_slice(bytes).map(OpeningKey).map_err(|_| SealError::BadKey)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        OpeningKey(SecretKey::random(&mut rand::rngs::OsRng))
    }

    pub fn sealing_key(&self) -> SealingKey {
        SealingKey(self.0.public_key())
    }
}

/// The HKDF info and AEAD associated data of a value: the format, the appliance id and the
/// value's path, NUL-separated.
pub fn info(appliance: ApplianceId, path: &str) -> Vec<u8> {
    let mut info = INFO_PREFIX.to_vec();
    info.push(0);
    info.extend_from_slice(appliance.to_string().as_bytes());
    info.push(0);
    info.extend_from_slice(path.as_bytes());
    info
}

fn cipher(shared: &[u8], epk: &[u8], recipient: &[u8], info: &[u8]) -> Aes256Gcm {
    let mut salt = epk.to_vec();
    salt.extend_from_slice(recipient);
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared).expand(info, &mut key).expect("32 bytes is a valid HKDF-SHA256 length");
    Aes256Gcm::new(&key.into())
}

/// Seals `plain` to `to` for `appliance` at `path` with a fresh ephemeral key and nonce.
pub fn seal(to: &SealingKey, appliance: ApplianceId, path: &str, plain: &str) -> Result<Value, SealError> {
    let ephemeral = SecretKey::random(&mut rand::rngs::OsRng);
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with(to, appliance, path, plain, &ephemeral.to_bytes(), nonce)
}

/// [`seal`] with a given ephemeral scalar and nonce: for test vectors only (reusing either
/// would break the scheme).
pub fn seal_with(
    to: &SealingKey,
    appliance: ApplianceId,
    path: &str,
    plain: &str,
    ephemeral: &[u8],
    nonce: [u8; 12],
) -> Result<Value, SealError> {
    let ephemeral = SecretKey::from_slice(ephemeral).map_err(|_| SealError::BadKey)?;
    let epk = ephemeral.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), to.0.as_affine());
    let info = info(appliance, path);
    let ct = cipher(shared.raw_secret_bytes(), epk.as_bytes(), &to.to_sec1_bytes(), &info)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: &info })
        .map_err(|_| SealError::Seal)?;
    Ok(serde_json::json!({ SEALED: {
        "v": FORMAT,
        "epk": STANDARD.encode(epk.as_bytes()),
        "nonce": STANDARD.encode(nonce),
        "ct": STANDARD.encode(ct),
    }}))
}

/// Opens a `{"$sealed": …}` value sealed to `key` for `appliance` at `path`.
pub fn open(key: &OpeningKey, appliance: ApplianceId, path: &str, sealed: &Value) -> Result<Secret<String>, SealError> {
    let fail = || SealError::Open { path: path.to_string() };
    let body = sealed.as_object().and_then(|o| single(o, SEALED)).and_then(Value::as_object).ok_or_else(fail)?;
    if body.get("v").and_then(Value::as_u64) != Some(u64::from(FORMAT)) {
        return Err(fail());
    }
    let field = |name: &str| body.get(name).and_then(Value::as_str).and_then(|s| STANDARD.decode(s).ok());
    let (epk, nonce, ct) =
        (field("epk").ok_or_else(fail)?, field("nonce").ok_or_else(fail)?, field("ct").ok_or_else(fail)?);
    if nonce.len() != 12 {
        return Err(fail());
    }
    let epk_key = PublicKey::from_sec1_bytes(&epk).map_err(|_| fail())?;
    let shared = p256::ecdh::diffie_hellman(key.0.to_nonzero_scalar(), epk_key.as_affine());
    let info = info(appliance, path);
    let plain = cipher(shared.raw_secret_bytes(), &epk, &key.sealing_key().to_sec1_bytes(), &info)
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: &info })
        .map_err(|_| fail())?;
    String::from_utf8(plain).map(Secret::new).map_err(|_| fail())
}

fn single<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    (obj.len() == 1).then(|| obj.get(key)).flatten()
}

/// Whether `v` is a `{"$sealed": …}` value.
pub fn is_sealed(v: &Value) -> bool {
    v.as_object().and_then(|o| single(o, SEALED)).is_some()
}

/// Joins a document path: `a.b`, `a[0]`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// What [`walk`] calls on every object: its path and the object; a value returned
/// replaces the object.
pub type Visit<'a, E> = dyn FnMut(&str, &Map<String, Value>) -> Result<Option<Value>, E> + 'a;

/// Walks a document, calling `f` on every object with its path; where `f` returns a value,
/// that value replaces the object (and is not walked into).
pub fn walk<E>(doc: &Value, path: &str, f: &mut Visit<'_, E>) -> Result<Value, E> {
    match doc {
        Value::Object(obj) => {
            if let Some(v) = f(path, obj)? {
                return Ok(v);
            }
            let mut out = Map::new();
            for (k, v) in obj {
                out.insert(k.clone(), walk(v, &join(path, k), f)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => Ok(Value::Array(
            items.iter().enumerate().map(|(i, v)| walk(v, &format!("{path}[{i}]"), f)).collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

/// The document with every sealed value opened to its string: what the appliance applies,
/// to be held in memory only for that.
pub fn open_document(
    key: &OpeningKey,
    appliance: ApplianceId,
    doc: &Map<String, Value>,
) -> Result<Secret<Map<String, Value>>, SealError> {
    let opened = walk(&Value::Object(doc.clone()), "", &mut |path, obj| {
        if single(obj, SEALED).is_none() {
            return Ok(None);
        }
        open(key, appliance, path, &Value::Object(obj.clone())).map(|s| Some(Value::String(s.expose().clone())))
    })?;
    match opened {
        Value::Object(m) => Ok(Secret::new(m)),
        _ => unreachable!("walking an object yields an object"),
    }
}

/// How many sealed values `doc` holds.
pub fn count(doc: &Map<String, Value>) -> usize {
    let mut n = 0;
    let _ = walk::<()>(&Value::Object(doc.clone()), "", &mut |_, obj| {
        Ok(single(obj, SEALED).map(|_| {
            n += 1;
            Value::Null
        }))
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flip(sealed: &Value, field: &str) -> Value {
        let mut v = sealed.clone();
        let mut bytes = STANDARD.decode(v[SEALED][field].as_str().unwrap()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        v[SEALED][field] = Value::String(STANDARD.encode(bytes));
        v
    }

    #[test]
    fn round_trip_and_every_tamper_fails() {
        let key = OpeningKey::generate();
        let id = ApplianceId::new();
        let path = "mail.relay.password";
        let sealed = seal(&key.sealing_key(), id, path, "hunter2 ünïcode").unwrap();
        assert!(is_sealed(&sealed));
        assert_eq!(open(&key, id, path, &sealed).unwrap().expose(), "hunter2 ünïcode");
        // Fresh ephemeral key and nonce every time.
        assert_ne!(sealed, seal(&key.sealing_key(), id, path, "hunter2 ünïcode").unwrap());

        let refused = |v: &Value, k: &OpeningKey, id, p: &str| assert!(open(k, id, p, v).is_err(), "{v}");
        refused(&sealed, &OpeningKey::generate(), id, path);
        refused(&sealed, &key, ApplianceId::new(), path);
        refused(&sealed, &key, id, "mail.relay.username");
        for field in ["ct", "nonce", "epk"] {
            refused(&flip(&sealed, field), &key, id, path);
        }
        let mut v2 = sealed.clone();
        v2[SEALED]["v"] = json!(2);
        refused(&v2, &key, id, path);
        refused(&json!({SEALED: {"v": 1}}), &key, id, path);
        refused(&json!("hunter2"), &key, id, path);
        let err = open(&OpeningKey::generate(), id, path, &sealed).unwrap_err().to_string();
        assert_eq!(err, "mail.relay.password: a sealed value cannot be opened");
    }

    #[test]
    fn documents_open_by_path() {
        let key = OpeningKey::generate();
        let id = ApplianceId::new();
        let doc = json!({"mail": {"relay": {"host": "h", "password": seal(&key.sealing_key(), id, "mail.relay.password", "a").unwrap()}},
                         "users": [{"password": seal(&key.sealing_key(), id, "users[0].password", "b").unwrap()}]});
        let doc = doc.as_object().unwrap();
        assert_eq!(count(doc), 2);
        let opened = open_document(&key, id, doc).unwrap();
        assert_eq!(
            Value::Object(opened.expose().clone()),
            json!({"mail": {"relay": {"host": "h", "password": "a"}}, "users": [{"password": "b"}]})
        );
        assert_eq!(format!("{opened:?}"), "[redacted]");
        // A value moved to another place does not open.
        let mut moved = doc.clone();
        moved["users"][0]["password"] = doc["mail"]["relay"]["password"].clone();
        assert!(open_document(&key, id, &moved).is_err());
    }

    #[test]
    fn keys_from_their_encodings() {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let generated = OpeningKey::generate();
        let pem = generated.0.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = OpeningKey::from_pkcs8_pem(&pem).unwrap();
        let pk = key.sealing_key();
        assert_eq!(pk, generated.sealing_key());
        assert_eq!(pk.to_sec1_bytes().len(), 65);
        assert_eq!(SealingKey::from_sec1_bytes(&pk.to_sec1_bytes()).unwrap(), pk);
        assert_eq!(SealingKey::from_sec1_bytes(&[4u8; 65]), Err(SealError::BadKey));
        assert!(OpeningKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n").is_err());
        assert_eq!(format!("{key:?}"), "OpeningKey([redacted])");
    }
}
