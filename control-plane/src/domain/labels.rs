//! Appliance labels: key=value pairs that group appliances (a room, a ring, a customer's own
//! naming) and that a fleet rollout's selector matches.
//!
//! Rules (one place, for every caller): a key is 1 to [`MAX_KEY`] characters of `a-z 0-9 .
//! _ -` with at most one `/` (a prefix, as Kubernetes has), starting and ending with a
//! letter or digit on each side of the `/`; a value 0 to [`MAX_VALUE`] characters of `A-Z
//! a-z 0-9 . _ -`; at most [`MAX_LABELS`] per appliance. Keys under [`OPERATOR_PREFIX`] are
//! operators': a tenant sees them, cannot set or remove them, and replacing its labels keeps
//! them. Every change is audited (`appliance.labels`, before and after).

use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;

use super::appliances::ApplianceError;
use super::Invalid;
use crate::db::appliances::{self as store, Labels};
use crate::db::audit::Recorder;
use crate::db::tenant_tx;

/// The most labels one appliance carries.
pub const MAX_LABELS: usize = 32;
/// The longest key and value, in characters.
pub const MAX_KEY: usize = 63;
pub const MAX_VALUE: usize = 63;
/// Keys only operators set.
pub const OPERATOR_PREFIX: &str = "fleet/";

/// Checks every label against the rules above (`param` is `labels`).
pub fn validate(labels: &Labels) -> Result<(), Invalid> {
    if labels.len() > MAX_LABELS {
        return Err(Invalid::new("labels", format!("at most {MAX_LABELS} labels per appliance")));
    }
    for (key, value) in labels {
        if !valid_key(key) {
            return Err(Invalid::new(
                "labels",
                format!(
                    "label key {key:?}: 1 to {MAX_KEY} characters of a-z, 0-9, '.', '_', '-', at most one '/', starting \
                     and ending with a letter or digit"
                ),
            ));
        }
        let value_ok = value.len() <= MAX_VALUE
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !value_ok {
            return Err(Invalid::new(
                "labels",
                format!("label {key:?}: the value must be 0 to {MAX_VALUE} characters of A-Z, a-z, 0-9, '.', '_', '-'"),
            ));
        }
    }
    Ok(())
}

fn valid_key(key: &str) -> bool {
    if key.is_empty() || key.len() > MAX_KEY {
        return false;
    }
    let part_ok = |p: &str| {
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        edge(p.chars().next())
            && edge(p.chars().last())
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    };
    match key.split_once('/') {
        Some((prefix, name)) => part_ok(prefix) && part_ok(name),
        None => part_ok(key),
    }
}

/// Whether a key is operators' only.
pub fn is_operators(key: &str) -> bool {
    key.starts_with(OPERATOR_PREFIX)
}

/// `key=value,key=value` (a query parameter, or the CLI's arguments joined) as labels, checked.
pub fn parse_pairs(text: &str) -> Result<Labels, Invalid> {
    let mut labels = Labels::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Invalid::new("labels", format!("{pair:?} is not key=value (pairs separated by commas)")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    validate(&labels)?;
    Ok(labels)
}

/// A tenant replaces its own labels on one of its appliances; operators' labels stay.
/// Returns all of the appliance's labels.
pub async fn set_for_tenant(
    pool: &PgPool,
    tenant: TenantId,
    id: ApplianceId,
    labels: &Labels,
    audit: Recorder<'_>,
) -> Result<Labels, ApplianceError> {
    if let Some(key) = labels.keys().find(|k| is_operators(k)) {
        return Err(Invalid::new(
            "labels",
            format!("label {key:?}: keys under {OPERATOR_PREFIX} are set by operators"),
        )
        .into());
    }
    let mut tx = tenant_tx(pool, tenant).await?;
    let (_, before) = store::labels_for_update(&mut tx, Some(tenant), id).await?.ok_or(ApplianceError::NotFound)?;
    let mut after: Labels =
        before.iter().filter(|(k, _)| is_operators(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    after.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    validate(&after)?;
    store::set_labels(&mut tx, id, &after).await?;
    record(&audit, &mut tx, tenant, id, &before, &after).await?;
    tx.commit().await?;
    Ok(after)
}

/// An operator replaces all of an appliance's labels. Returns them.
pub async fn set_for_operator(
    pool: &PgPool,
    id: ApplianceId,
    labels: &Labels,
    audit: Recorder<'_>,
) -> Result<Labels, ApplianceError> {
    validate(labels)?;
    let mut tx = pool.begin().await?;
    let (tenant, before) = store::labels_for_update(&mut tx, None, id).await?.ok_or(ApplianceError::NotFound)?;
    store::set_labels(&mut tx, id, labels).await?;
    record(&audit, &mut tx, tenant, id, &before, labels).await?;
    tx.commit().await?;
    Ok(labels.clone())
}

async fn record(
    audit: &Recorder<'_>,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: ApplianceId,
    before: &Labels,
    after: &Labels,
) -> Result<(), sqlx::Error> {
    let json = |l: &Labels| serde_json::to_value(l).ok();
    audit.record(conn, Some(tenant), "appliance.labels", ("appliance", id.to_string()), json(before), json(after)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_and_values_follow_the_rules() {
        assert!(
            validate(&labels(&[("room", "hall"), ("fleet/ring", "canary"), ("a.b_c-d", ""), ("x", "A-1.b_c")])).is_ok()
        );
        for bad in ["", "Room", "-room", "room-", "a/b/c", "/room", "room/", "ro om", &"k".repeat(64)] {
            assert!(validate(&labels(&[(bad, "v")])).is_err(), "key {bad:?}");
        }
        for bad in ["a b", "a/b", "é", &"v".repeat(64)] {
            assert!(validate(&labels(&[("k", bad)])).is_err(), "value {bad:?}");
        }
        let many: Labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate(&many).is_err());
    }

    #[test]
    fn a_selector_is_comma_separated_pairs() {
        assert_eq!(
            parse_pairs("room=hall,fleet/ring=canary").unwrap(),
            labels(&[("room", "hall"), ("fleet/ring", "canary")])
        );
        assert_eq!(parse_pairs("").unwrap(), Labels::new());
        assert_eq!(parse_pairs("room").unwrap_err().param, "labels");
        assert!(parse_pairs("Room=x").is_err());
    }
}
