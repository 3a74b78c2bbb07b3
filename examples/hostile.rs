//! Write the damaged and hostile reproducers of `tests/common/hostile.rs`
//! into a folder, to try a node by hand:
//!
//! ```sh
//! cargo run --example hostile -- /tmp/hostile && tunemesh scan /tmp/hostile
//! ```

#[path = "../tests/common/hostile.rs"]
mod hostile;

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: hostile DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    hostile::write_all(&dir);
    for (name, bytes) in hostile::all() {
        println!("{:>9} bytes  {}", bytes.len(), dir.join(name).display());
    }
}
