//! Command-line options of the bench drivers: each bench derives its own
//! `clap::Parser` and flattens [`CargoBench`] into it, so every bench takes
//! what `cargo bench` passes and answers `-- --help` the same way.

use clap::builder::RangedU64ValueParser;

/// What `cargo bench` passes to a `harness = false` target besides the
/// bench's own options: `--bench`, and the name filters of
/// `cargo bench NAME`. Both are ignored.
#[derive(clap::Args, Debug)]
pub struct CargoBench {
    #[arg(long = "bench", hide = true, action = clap::ArgAction::Count)]
    _bench: u8,
    #[arg(hide = true)]
    _filters: Vec<String>,
}

/// A count of at least 1 (`value_parser = common::args::at_least_one()`).
pub fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// A count in `1..=max`.
pub fn one_to(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..=max)
}

/// The options as given (`--help` prints them and exits 0; a bad option
/// prints why and exits 2).
pub fn parse<A: clap::Parser>() -> A {
    A::parse()
}
