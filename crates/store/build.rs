//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files it saw
//! at compile time and only tracks files that already existed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
