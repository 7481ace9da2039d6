//! Bearer secrets (API keys, enrollment tokens): generation, hashing for storage, and the
//! short prefix kept to recognise a leaked one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// `prefix` followed by 256 random bits, base64url.
pub fn generate(prefix: &str) -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored: SHA-256 of the whole secret.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The type prefix plus six characters: enough to find the row, useless to an attacker.
pub fn display_prefix(secret: &str) -> String {
    let cut = secret.find('_').and_then(|i| secret[i + 1..].find('_').map(|j| i + j + 2)).unwrap_or(0);
    secret.chars().take(cut + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_hashed() {
        let a = generate("hearth_tk_");
        let b = generate("hearth_tk_");
        assert!(a.expose().starts_with("hearth_tk_"));
        assert_eq!(a.expose().len(), "hearth_tk_".len() + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(hash(a.expose()).len(), 32);
        assert_eq!(display_prefix(a.expose()).len(), "hearth_tk_".len() + 6);
        assert!(a.expose().starts_with(&display_prefix(a.expose())));
    }
}
