//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, the parameters
//! every authenticator app uses) for operator accounts' second factor. HMAC comes from
//! ring, which rustls links anyway; the key is shown once as base32 (RFC 4648) in an
//! `otpauth://` URI.

use ring::hmac;

/// Seconds per step.
pub const STEP_S: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps either side of now that are still accepted (clock drift of the phone).
pub const WINDOW: i64 = 1;
/// Bytes in a key (160 bits, as RFC 4226 recommends).
pub const KEY_LEN: usize = 20;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A new random key.
pub fn generate_key() -> [u8; KEY_LEN] {
    use rand::RngCore;
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes [`base32`]'s output (case-insensitive, padding and spaces ignored).
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
        let v = BASE32.iter().position(|&a| a as char == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// The code for time step `step` (RFC 4226's HOTP over the step counter).
pub fn code_at(key: &[u8], step: i64) -> u32 {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key), &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    bin % 10u32.pow(DIGITS)
}

/// The step of Unix time `unix_s`.
pub fn step_of(unix_s: i64) -> i64 {
    unix_s.div_euclid(STEP_S)
}

/// The step `code` is good for at `unix_s` (within [`WINDOW`] steps), if any and if it is
/// later than `last_step` (a code is accepted once). Anything but six digits is refused.
pub fn verify(key: &[u8], code: &str, unix_s: i64, last_step: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step_of(unix_s);
    (now - WINDOW..=now + WINDOW)
        .filter(|s| last_step.is_none_or(|last| *s > last))
        .find(|s| code_at(key, *s) == wanted)
}

/// The `otpauth://` URI an authenticator app reads (usually from a QR code).
pub fn otpauth_uri(issuer: &str, account: &str, key: &[u8]) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_S}",
        enc(issuer),
        enc(account),
        base32(key),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B (SHA-1 key "12345678901234567890"; 8-digit codes there, whose
    /// last six digits are the 6-digit codes).
    #[test]
    fn rfc_6238_test_vectors() {
        let key = b"12345678901234567890";
        for (t, eight) in [(59, 94287082u32), (1111111109, 7081804), (1111111111, 14050471), (1234567890, 89005924)] {
            assert_eq!(code_at(key, step_of(t)), eight % 1_000_000, "t={t}");
        }
        assert_eq!(code_at(key, step_of(2000000000)), 279037);
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(from_base32("mzxw 6ytb oi======").unwrap(), b"foobar");
        let key = generate_key();
        assert_eq!(from_base32(&base32(&key)).unwrap(), key);
        assert!(from_base32("1not-base32").is_none());
    }

    #[test]
    fn a_code_is_good_within_the_window_and_only_once() {
        let key = generate_key();
        let now = 1_800_000_000;
        let code = format!("{:06}", code_at(&key, step_of(now)));
        let step = verify(&key, &code, now, None).expect("the current code");
        assert_eq!(step, step_of(now));
        assert_eq!(verify(&key, &code, now, Some(step)), None, "replayed");
        assert_eq!(verify(&key, &code, now + STEP_S, None), Some(step), "one step late");
        assert_eq!(verify(&key, &code, now + 3 * STEP_S, None), None, "too late");
        assert_eq!(verify(&key, "12345", now, None), None);
        assert_eq!(verify(&key, "abcdef", now, None), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_account_and_key() {
        let uri = otpauth_uri("Hearth", "ops lead", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/Hearth:ops%20lead?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Hearth&algorithm=SHA1\
             &digits=6&period=30"
        );
    }
}
