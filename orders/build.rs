//! New migration files must trigger a rebuild of the embedded migrations.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
