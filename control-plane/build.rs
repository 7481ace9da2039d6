//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! `migrations/` directory at compile time, and without this cargo would not notice a new
//! file there (a binary built before it would run without the migration).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
