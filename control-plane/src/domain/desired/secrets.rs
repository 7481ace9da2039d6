//! Secrets inside configuration documents.
//!
//! Written by a client as `{"$secret": "plain text"}`; stored as `{"$encrypted": "<base64
//! nonce ‖ ciphertext>"}` (AES-256-GCM, the tenant id as associated data so a stored value
//! cannot be moved to another tenant); shown by the API as `{"$secret": "[redacted]"}`;
//! decrypted only for the moment of sealing it to the appliance it is sent to
//! ([`for_appliance`], `hearth_protocol::sealed`), so the broker never holds it in clear. An
//! appliance without a sealing key (enrolled by an older agent) gets the plain string,
//! and the dispatcher must then send that document at QoS 0 (never queued by the broker).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hearth_protocol::sealed::{self, SealingKey};
use hearth_protocol::{ApplianceId, TenantId};
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
    #[error("a secret cannot be sealed to the appliance's key")]
    Seal,
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
        self.seal_text(&tenant.to_string(), plain)
    }

    fn open(&self, tenant: TenantId, sealed: &str) -> Result<String, SecretError> {
        self.open_text(&tenant.to_string(), sealed)
    }

    /// Encrypts `plain` bound to `aad` (what it belongs to: a tenant, a webhook endpoint),
    /// so the ciphertext cannot be moved to another owner. Base64 of nonce ‖ ciphertext.
    pub fn seal_text(&self, aad: &str, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| SecretError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`SecretKey::seal_text`] sealed for the same `aad`.
    pub fn open_text(&self, aad: &str, sealed: &str) -> Result<String, SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = bytes.split_at(12);
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

/// A document as one appliance gets it.
#[derive(Debug)]
pub struct ForAppliance {
    pub document: Value,
    /// How many secrets it carries.
    pub secrets: usize,
    /// Its secrets are in clear (the appliance has no sealing key): send it at QoS 0 only,
    /// never queued by the broker nor retained.
    pub in_clear: bool,
}

/// The stored document as `appliance` gets it: every secret decrypted and, at once, sealed
/// to the appliance's key at its path (`hearth_protocol::sealed`); without a key, the
/// plain string.
pub fn for_appliance(
    doc: &Value,
    tenant: TenantId,
    key: Option<&SecretKey>,
    appliance: ApplianceId,
    sealing: Option<&SealingKey>,
) -> Result<ForAppliance, SecretError> {
    let mut secrets = 0;
    let document = sealed::walk(doc, "", &mut |path, obj| {
        let Some(Value::String(stored)) = single(obj, ENCRYPTED) else {
            return Ok(None);
        };
        secrets += 1;
        let plain = key.ok_or(SecretError::NoKey)?.open(tenant, stored)?;
        Ok(Some(match sealing {
            Some(to) => sealed::seal(to, appliance, path, &plain).map_err(|_| SecretError::Seal)?,
            None => Value::String(plain),
        }))
    })?;
    Ok(ForAppliance { document, secrets, in_clear: secrets > 0 && sealing.is_none() })
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
    fn seal_redact_and_send_sealed_or_in_clear() {
        let t = TenantId::new();
        let doc = json!({"mail": {"relay": {"host": "smtp.example.com", "password": {"$secret": "hunter2"}}}});
        let stored = seal(&doc, &Value::Null, t, Some(&key()), "").unwrap();
        let text = stored.to_string();
        assert!(!text.contains("hunter2") && text.contains(ENCRYPTED), "{text}");
        assert_eq!(redact(&stored)["mail"]["relay"]["password"], json!({"$secret": "[redacted]"}));
        let a = ApplianceId::new();
        let clear = for_appliance(&stored, t, Some(&key()), a, None).unwrap();
        assert_eq!((clear.secrets, clear.in_clear), (1, true));
        assert_eq!(clear.document["mail"]["relay"]["password"], "hunter2");
        // Sealed to the appliance's key at its path: only that key opens it.
        let appliance_key = sealed::OpeningKey::generate();
        let out = for_appliance(&stored, t, Some(&key()), a, Some(&appliance_key.sealing_key())).unwrap();
        assert_eq!((out.secrets, out.in_clear), (1, false));
        let text = out.document.to_string();
        assert!(!text.contains("hunter2") && text.contains(sealed::SEALED), "{text}");
        let value = &out.document["mail"]["relay"]["password"];
        assert_eq!(sealed::open(&appliance_key, a, "mail.relay.password", value).unwrap().expose(), "hunter2");
        let none = for_appliance(&json!({"a": 1}), t, None, a, None).unwrap();
        assert_eq!((none.secrets, none.in_clear), (0, false));
        // Bound to the tenant.
        assert!(matches!(for_appliance(&stored, TenantId::new(), Some(&key()), a, None), Err(SecretError::Decrypt)));
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
