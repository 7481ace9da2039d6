//! Secrets inside configuration documents.
//!
//! Written by a client as `{"$secret": "plain text"}`; stored as `{"$encrypted": "<base64
//! nonce ‖ ciphertext>"}` (AES-256-GCM, the tenant id as associated data so a stored value
//! cannot be moved to another tenant); shown by the API as `{"$secret": "[redacted]"}`;
//! decrypted only into the document sent to the appliance, where it becomes a plain string.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hearth_protocol::TenantId;
use rand::RngCore;
use serde_json::{Map, Value};

pub const SECRET: &str = "$secret";
pub const ENCRYPTED: &str = "$encrypted";
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "setting `secrets.key` (HEARTH_SECRETS__KEY) must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error("this document holds secrets but no `secrets.key` is configured on the control plane")]
    NoKey,
    #[error("{path}: a secret must be written as {{\"$secret\": \"…\"}} with a string value")]
    BadSecret { path: String },
    #[error("{path}: \"[redacted]\" keeps a stored secret, but there is no stored secret at this path")]
    NothingToKeep { path: String },
    #[error("a stored secret cannot be decrypted (wrong secrets.key, or tampered data)")]
    Decrypt,
}

/// The key that seals secrets at rest.
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    pub fn from_base64(b64: &str) -> Result<SecretKey, SecretError> {
        let bytes = STANDARD.decode(b64.trim()).map_err(|_| SecretError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        Ok(SecretKey(cipher))
    }

    fn seal(&self, tenant: TenantId, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = tenant.to_string();
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| SecretError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, tenant: TenantId, sealed: &str) -> Result<String, SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = bytes.split_at(12);
        let aad = tenant.to_string();
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

fn single<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    (obj.len() == 1).then(|| obj.get(key)).flatten()
}

/// Turns every `{"$secret": "…"}` in an incoming document into `{"$encrypted": "…"}`.
/// `{"$secret": "[redacted]"}` keeps the value stored at the same path in `previous`.
pub fn seal(
    doc: &Value,
    previous: &Value,
    tenant: TenantId,
    key: Option<&SecretKey>,
    path: &str,
) -> Result<Value, SecretError> {
    match doc {
        Value::Object(obj) => {
            if let Some(v) = single(obj, SECRET) {
                let plain = v.as_str().ok_or_else(|| SecretError::BadSecret { path: path.to_string() })?;
                if plain == REDACTED {
                    let kept = previous.as_object().and_then(|p| single(p, ENCRYPTED));
                    return match kept {
                        Some(v) => Ok(serde_json::json!({ ENCRYPTED: v })),
                        None => Err(SecretError::NothingToKeep { path: path.to_string() }),
                    };
                }
                let key = key.ok_or(SecretError::NoKey)?;
                return Ok(serde_json::json!({ ENCRYPTED: key.seal(tenant, plain)? }));
            }
            if obj.contains_key(ENCRYPTED) {
                return Err(SecretError::BadSecret { path: path.to_string() });
            }
            let mut out = Map::new();
            for (k, v) in obj {
                let prev = previous.get(k).unwrap_or(&Value::Null);
                out.insert(k.clone(), seal(v, prev, tenant, key, &join(path, k))?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| seal(v, previous.get(i).unwrap_or(&Value::Null), tenant, key, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

/// The stored document as the API shows it: every secret `{"$secret": "[redacted]"}`.
pub fn redact(doc: &Value) -> Value {
    map_sealed(doc, &mut |_| Ok(serde_json::json!({ SECRET: REDACTED }))).unwrap_or(Value::Null)
}

/// The stored document as the appliance gets it: every secret decrypted to a plain string.
pub fn reveal(doc: &Value, tenant: TenantId, key: Option<&SecretKey>) -> Result<Value, SecretError> {
    map_sealed(doc, &mut |sealed| {
        let key = key.ok_or(SecretError::NoKey)?;
        Ok(Value::String(key.open(tenant, sealed)?))
    })
}

/// How many sealed secrets `doc` holds.
pub fn count_sealed(doc: &Value) -> usize {
    let mut n = 0;
    let _ = map_sealed(doc, &mut |_| {
        n += 1;
        Ok(Value::Null)
    });
    n
}

fn map_sealed(doc: &Value, f: &mut dyn FnMut(&str) -> Result<Value, SecretError>) -> Result<Value, SecretError> {
    match doc {
        Value::Object(obj) => {
            if let Some(Value::String(sealed)) = single(obj, ENCRYPTED) {
                return f(sealed);
            }
            let mut out = Map::new();
            for (k, v) in obj {
                out.insert(k.clone(), map_sealed(v, f)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => Ok(Value::Array(items.iter().map(|v| map_sealed(v, f)).collect::<Result<_, _>>()?)),
        other => Ok(other.clone()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SecretKey {
        SecretKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn seal_redact_reveal() {
        let t = TenantId::new();
        let doc = json!({"mail": {"relay": {"host": "smtp.example.com", "password": {"$secret": "hunter2"}}}});
        let stored = seal(&doc, &Value::Null, t, Some(&key()), "").unwrap();
        let text = stored.to_string();
        assert!(!text.contains("hunter2") && text.contains(ENCRYPTED), "{text}");
        assert_eq!(redact(&stored)["mail"]["relay"]["password"], json!({"$secret": "[redacted]"}));
        assert_eq!(reveal(&stored, t, Some(&key())).unwrap()["mail"]["relay"]["password"], "hunter2");
        // Bound to the tenant.
        assert!(matches!(reveal(&stored, TenantId::new(), Some(&key())), Err(SecretError::Decrypt)));
        // Sending the redacted form back keeps the stored value.
        let again = seal(&redact(&stored), &stored, t, Some(&key()), "").unwrap();
        assert_eq!(again, stored);
    }

    #[test]
    fn refusals() {
        let t = TenantId::new();
        assert!(matches!(seal(&json!({"p": {"$secret": "x"}}), &Value::Null, t, None, ""), Err(SecretError::NoKey)));
        let err = seal(&json!({"a": {"p": {"$secret": 5}}}), &Value::Null, t, Some(&key()), "").unwrap_err();
        assert_eq!(err.to_string(), "a.p: a secret must be written as {\"$secret\": \"…\"} with a string value");
        assert!(matches!(
            seal(&json!({"p": {"$encrypted": "forged"}}), &Value::Null, t, Some(&key()), ""),
            Err(SecretError::BadSecret { .. })
        ));
        assert!(matches!(
            seal(&json!({"p": {"$secret": "[redacted]"}}), &Value::Null, t, Some(&key()), ""),
            Err(SecretError::NothingToKeep { .. })
        ));
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }
}
