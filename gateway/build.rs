//! The web UI is embedded with include_str!: rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=ui");
}
