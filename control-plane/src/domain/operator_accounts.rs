//! Operator accounts: how people sign in to the web console (operator tokens stay for
//! automation). An account has a name, a role (as tokens: admin, support, viewer), an
//! argon2id password and, optionally, a TOTP second factor; a sign-in opens a session
//! whose secret travels only in an `HttpOnly` cookie, and whose CSRF token (derived from
//! the secret) must come back in `X-CSRF-Token` on every change made with the cookie.
//!
//! Sign-ins go through the same bad-credential limits as customers' (per source, per
//! name from that source, per name from everywhere; `CredentialLimits`), keyed by the name
//! in a namespace of its own so an operator's name and a customer's address never share a
//! bucket. Created and disabled accounts, sign-ins, password and TOTP changes are audited.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hearth_protocol::OperatorId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{label, Invalid, Services};
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::is_constraint;
use crate::db::operator_accounts::{self as store, OperatorAccount};
use crate::db::operators::Operator;
use crate::db::users::{self, UserError};
use crate::limits::{CredentialLimits, TooManyFailures};
use crate::model::OperatorRole;
use crate::secret::Secret;
use crate::totp;

/// Longest account name.
pub const NAME_MAX: usize = 100;
/// The TOTP issuer shown by authenticator apps.
pub const TOTP_ISSUER: &str = "Hearth";

#[derive(Debug, thiserror::Error)]
pub enum OperatorAccountError {
    /// Unknown name, disabled account or wrong password (they answer alike).
    #[error("the name or the password is wrong")]
    InvalidCredentials,
    #[error("this account asks for a TOTP code: send `totp`")]
    TotpRequired,
    #[error("the TOTP code is wrong, expired or used already")]
    InvalidTotp,
    #[error("too many failed attempts; try again in {} s", .0.retry_after_s())]
    TooManyFailures(TooManyFailures),
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("no TOTP key is waiting to be confirmed: ask for one first")]
    NoPendingTotp,
    #[error("a second factor needs `secrets.key` (HEARTH_SECRETS__KEY) configured on the control plane")]
    NoSecretsKey,
    #[error("operator account not found")]
    NotFound,
    #[error("an operator account with this name exists already")]
    NameTaken,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Password(UserError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<UserError> for OperatorAccountError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Database(d) => OperatorAccountError::Database(d),
            other => OperatorAccountError::Password(other),
        }
    }
}

/// A newly created account.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAccount {
    #[serde(flatten)]
    pub account: OperatorAccount,
    /// The password, when the control plane chose it: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The signed-in operator of a console session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionOperator {
    pub id: OperatorId,
    pub name: String,
    pub role: OperatorRole,
}

impl From<Operator> for SessionOperator {
    fn from(o: Operator) -> Self {
        SessionOperator { id: o.id, name: o.name, role: o.role }
    }
}

/// A console session as its page sees it (the secret itself goes in the cookie only).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsoleSession {
    pub operator: SessionOperator,
    /// Send back as `X-CSRF-Token` with every POST, PUT, PATCH and DELETE.
    pub csrf_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A new session: what the page sees, and the secret for the cookie.
#[derive(Debug)]
pub struct OpenedSession {
    pub session: ConsoleSession,
    pub secret: Secret<String>,
}

/// The CSRF token of the session whose secret is `secret`: an HMAC-free derivation is
/// enough because the secret never leaves the cookie, which scripts cannot read.
pub fn csrf_token(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"hearth console csrf\0");
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Whether `sent` is the CSRF token of `secret` (compared in constant time).
pub fn csrf_matches(secret: &str, sent: &str) -> bool {
    let want = csrf_token(secret);
    want.len() == sent.len() && want.bytes().zip(sent.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The session of `secret` as its page sees it.
pub fn describe(operator: Operator, secret: &str, expires_at: OffsetDateTime) -> ConsoleSession {
    ConsoleSession { operator: operator.into(), csrf_token: csrf_token(secret), expires_at }
}

fn generated_password() -> String {
    // 144 random bits in 24 characters.
    let t = crate::token::generate("");
    t.expose().chars().take(24).collect()
}

/// Creates an account; `password` `None` lets the control plane choose one, returned this
/// once. Audited (`operator_account.create`).
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: OperatorRole,
    password: Option<&str>,
    audit: Recorder<'_>,
) -> Result<CreatedAccount, OperatorAccountError> {
    let name = label("name", name, NAME_MAX)?;
    let generated = password.is_none().then(generated_password);
    let password = password.or(generated.as_deref()).unwrap_or_default();
    users::check_password(password)?;
    let hash = users::hash_password(password).await?;
    let mut tx = pool.begin().await?;
    let account = store::create(&mut tx, name, role, &hash, &audit.actor.label()).await.map_err(|e| {
        if is_constraint(&e, store::NAME_KEY) {
            OperatorAccountError::NameTaken
        } else {
            OperatorAccountError::Database(e)
        }
    })?;
    audit
        .record(
            &mut tx,
            None,
            "operator_account.create",
            ("operator_account", account.id.to_string()),
            None,
            snapshot(&account),
        )
        .await?;
    tx.commit().await?;
    Ok(CreatedAccount { account, password: generated })
}

pub async fn list(pool: &PgPool) -> Result<Vec<OperatorAccount>, OperatorAccountError> {
    Ok(store::list(pool).await?)
}

/// Disables an account: it cannot sign in and its sessions end. Audited
/// (`operator_account.disable`).
pub async fn disable(
    pool: &PgPool,
    id: OperatorId,
    audit: Recorder<'_>,
) -> Result<OperatorAccount, OperatorAccountError> {
    let mut tx = pool.begin().await?;
    let account = store::disable(&mut tx, id).await?.ok_or(OperatorAccountError::NotFound)?;
    audit
        .record(
            &mut tx,
            None,
            "operator_account.disable",
            ("operator_account", id.to_string()),
            None,
            snapshot(&account),
        )
        .await?;
    tx.commit().await?;
    Ok(account)
}

/// Who signs in to the console, from where.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub totp: Option<&'a str>,
    pub source: IpAddr,
    pub request_id: Option<&'a str>,
}

/// The bad-credential limits' key of an operator account name.
fn limits_key(name: &str) -> String {
    format!("operator:{name}")
}

/// Checks the password (and the TOTP code where the account has one) and opens a session,
/// audited (`operator.login`). Limits first, before any hashing; an unknown name costs one
/// argon2 verification against a dummy hash like a known one. A right password without a
/// code where one is needed is `TotpRequired` and counts as nothing; a wrong code counts
/// as a failure.
pub async fn login(
    svc: &Services,
    limits: &CredentialLimits,
    sign_in: SignIn<'_>,
) -> Result<OpenedSession, OperatorAccountError> {
    let SignIn { name, password, totp: code, source, request_id } = sign_in;
    let key = limits_key(name);
    if let Err(t) = limits.check_sign_in(source, &key) {
        svc.metrics.credential_refusals.with_label_values(&[t.scope.as_str()]).inc();
        return Err(OperatorAccountError::TooManyFailures(t));
    }
    let account = store::credentials_by_name(&svc.pool, name).await?;
    svc.metrics.password_verifications.inc();
    let ok = match &account {
        Some(a) => users::verify_password(password, &a.password_hash).await,
        None => {
            users::verify_password(password, &users::dummy_hash().await).await;
            false
        }
    };
    let Some(account) = account.filter(|_| ok) else {
        limits.sign_in_failed(source, &key);
        return Err(OperatorAccountError::InvalidCredentials);
    };
    if account.totp_enabled {
        let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
            return Err(OperatorAccountError::TotpRequired);
        };
        let step = match totp_key(svc, &account.id, account.totp_sealed.as_deref())? {
            Some(k) => totp::verify(&k, code, OffsetDateTime::now_utc().unix_timestamp(), account.totp_last_step),
            None => None,
        };
        let used = match step {
            Some(step) => store::use_totp_step(&svc.pool, account.id, step).await?,
            None => false,
        };
        if !used {
            limits.sign_in_failed(source, &key);
            return Err(OperatorAccountError::InvalidTotp);
        }
    }
    limits.signed_in(source, &key);
    let opened = store::open_session(&svc.pool, account.id, svc.auth.operator_session_ttl_s).await?;
    let operator = Operator { id: account.id, name: account.name, role: account.role };
    let actor = Actor::operator(operator.id, &operator.name);
    let mut tx = svc.pool.begin().await?;
    Recorder::new(&actor, request_id)
        .record(&mut tx, None, "operator.login", ("operator_account", operator.id.to_string()), None, None)
        .await?;
    tx.commit().await?;
    let session = describe(operator, opened.token.expose(), opened.expires_at);
    Ok(OpenedSession { session, secret: opened.token })
}

fn totp_key(svc: &Services, id: &OperatorId, sealed: Option<&str>) -> Result<Option<Vec<u8>>, OperatorAccountError> {
    let Some(sealed) = sealed else { return Ok(None) };
    let key = svc.secrets.as_ref().ok_or(OperatorAccountError::NoSecretsKey)?;
    let text = key.open_text(&format!("operator-totp:{id}"), sealed).map_err(|_| OperatorAccountError::NoSecretsKey)?;
    Ok(totp::from_base32(&text))
}

/// Ends the session whose secret is `secret` (nothing to end is fine: signed out anyway).
pub async fn logout(pool: &PgPool, secret: &str) -> Result<(), OperatorAccountError> {
    store::logout(pool, secret).await?;
    Ok(())
}

/// Changes the signed-in operator's own password after checking the current one; every
/// other session of the account ends. Audited (`operator_account.password_change`).
pub async fn change_password(
    pool: &PgPool,
    id: OperatorId,
    current: &str,
    new: &str,
    keep_session: &str,
    audit: Recorder<'_>,
) -> Result<(), OperatorAccountError> {
    users::check_password(new)?;
    let account = store::credentials(pool, id).await?.ok_or(OperatorAccountError::NotFound)?;
    if !users::verify_password(current, &account.password_hash).await {
        return Err(OperatorAccountError::WrongPassword);
    }
    let hash = users::hash_password(new).await?;
    store::set_password(pool, id, &hash, Some(keep_session)).await?;
    let mut tx = pool.begin().await?;
    audit
        .record(&mut tx, None, "operator_account.password_change", ("operator_account", id.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A TOTP key waiting for its first code.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// The key, base32 (type it into an authenticator app): shown this once.
    pub secret: String,
    /// The same as an `otpauth://` URI (what a QR code carries).
    pub otpauth_uri: String,
}

/// Starts (or restarts) TOTP for the signed-in operator: a new key, sealed at rest,
/// enabled only once a code from it is confirmed. Until then sign-in asks for no code.
pub async fn begin_totp(svc: &Services, operator: &Operator) -> Result<TotpEnrollment, OperatorAccountError> {
    let key = svc.secrets.as_ref().ok_or(OperatorAccountError::NoSecretsKey)?;
    let raw = totp::generate_key();
    let secret = totp::base32(&raw);
    let sealed = key
        .seal_text(&format!("operator-totp:{}", operator.id), &secret)
        .map_err(|_| OperatorAccountError::NoSecretsKey)?;
    store::set_pending_totp(&svc.pool, operator.id, &sealed).await?;
    Ok(TotpEnrollment { otpauth_uri: totp::otpauth_uri(TOTP_ISSUER, &operator.name, &raw), secret })
}

/// Enables the pending TOTP key once `code` proves the app has it. Audited
/// (`operator_account.totp_enable`).
pub async fn confirm_totp(
    svc: &Services,
    operator: &Operator,
    code: &str,
    audit: Recorder<'_>,
) -> Result<(), OperatorAccountError> {
    let account = store::credentials(&svc.pool, operator.id).await?.ok_or(OperatorAccountError::NotFound)?;
    let key = totp_key(svc, &account.id, account.totp_sealed.as_deref())?.ok_or(OperatorAccountError::NoPendingTotp)?;
    let step = totp::verify(&key, code, OffsetDateTime::now_utc().unix_timestamp(), account.totp_last_step)
        .ok_or(OperatorAccountError::InvalidTotp)?;
    store::enable_totp(&svc.pool, account.id, step).await?;
    let mut tx = svc.pool.begin().await?;
    audit
        .record(&mut tx, None, "operator_account.totp_enable", ("operator_account", account.id.to_string()), None, None)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let a = crate::token::generate(store::SESSION_PREFIX);
        let b = crate::token::generate(store::SESSION_PREFIX);
        let ta = csrf_token(a.expose());
        assert!(csrf_matches(a.expose(), &ta));
        assert!(!csrf_matches(b.expose(), &ta));
        assert!(!csrf_matches(a.expose(), ""));
        assert!(!csrf_matches(a.expose(), &ta[1..]));
        assert_ne!(ta, a.expose().as_str(), "the token is not the secret");
    }

    #[test]
    fn generated_passwords_meet_the_rules() {
        let p = generated_password();
        assert_eq!(p.chars().count(), 24);
        assert!(users::check_password(&p).is_ok());
        assert_ne!(p, generated_password());
    }
}
