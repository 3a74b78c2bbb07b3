//! Generate a synthetic library of N tagged MP3 files for benchmarks:
//!
//!     cargo run --release --example gen_library -- OUT_DIR [COUNT] [SEED]
//!
//! The template is the committed fixture `01 - Opening.mp3` (about 9 KB);
//! every file gets distinct tags (so a distinct track id) in nested
//! artist/album folders.

use anyhow::{Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .context("usage: gen_library OUT_DIR [COUNT] [SEED]")?,
    );
    let count: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lib/Alpha Artist/First Album/01 - Opening.mp3");
    let t = std::time::Instant::now();
    let paths = tunemesh::library::generate::generate(&template, &out, count, seed)?;
    eprintln!(
        "wrote {} files under {} in {:.1?}",
        paths.len(),
        out.display(),
        t.elapsed()
    );
    Ok(())
}
