//! Rebuild when a migration changes: `include_dir!` embeds ../../migrations at compile time, and
//! cargo does not otherwise know to look there.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
