//! Fuzz-style property tests of the parsers that read untrusted bytes, in
//! process and on stable Rust (cargo fuzz needs nightly): the scanner's
//! reading of a file, the transcoder's opening and decoding of it, and the
//! HTTP range parser. Inputs are random bytes and random damage to the
//! fixtures; what must hold is no panic, and for the decoder, bounded
//! output. `tests/fuzz.rs` runs the same kind of inputs through the real
//! binary with memory and time limits.

mod common;
use common::*;
use proptest::prelude::*;
use tunemesh::transcode::{Output, Request};

/// A fixture with up to 8 stretches overwritten by the given bytes.
fn damaged() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (
        0..AUDIO_FIXTURES.len(),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..8),
            ),
            1..8,
        ),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(i, edits, cut, truncate)| {
            let mut b = std::fs::read(fixtures().join(AUDIO_FIXTURES[i])).unwrap();
            for (at, bytes) in edits {
                let at = at.index(b.len());
                let n = bytes.len().min(b.len() - at);
                b[at..at + n].copy_from_slice(&bytes[..n]);
            }
            if truncate {
                b.truncate(cut.index(b.len()).max(1));
            }
            (i, b)
        })
}

/// Scan and transcode `bytes` as a file named like fixture `i`: no panic;
/// the output, if any, is bounded by what such a file could hold.
fn read_and_decode(i: usize, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let name = std::path::Path::new(AUDIO_FIXTURES[i]).file_name().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let _ = tunemesh::library::read_track(&path);
    let mut req = Request::new(64);
    req.passthrough = false;
    if let Ok(Output::Opus(mut t)) = tunemesh::transcode::open(&path, &req) {
        let mut out = 0usize;
        while let Ok(Some(page)) = t.next_pages() {
            out += page.len();
            // 64 kb/s of Opus for the longest a tiny file can last at the
            // lowest bitrate any codec has: far above, but finite.
            assert!(
                out < 64 << 20,
                "{name:?}: {out} bytes of output from {} bytes",
                bytes.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn damaged_fixtures_never_panic((i, bytes) in damaged()) {
        read_and_decode(i, &bytes);
    }

    #[test]
    fn random_bytes_never_panic(i in 0..AUDIO_FIXTURES.len(), bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        read_and_decode(i, &bytes);
    }

    #[test]
    fn range_headers_never_panic_and_parts_fit(h in "\\PC{0,40}", len in 0u64..10_000) {
        let spec = tunemesh::http::range::parse(&h);
        if let tunemesh::http::range::Answer::Part { first, last } = tunemesh::http::range::resolve(spec, len) {
            prop_assert!(first <= last && last < len);
        }
    }

    #[test]
    fn byte_ranges_resolve_like_rfc_9110(a in 0u64..2000, b in 0u64..2000, len in 1u64..1500) {
        use tunemesh::http::range::{parse, resolve, Answer};
        let got = resolve(parse(&format!("bytes={a}-{b}")), len);
        let want = if b < a || a >= len { Answer::Unsatisfiable } else { Answer::Part { first: a, last: b.min(len - 1) } };
        prop_assert_eq!(got, want);
        let got = resolve(parse(&format!("bytes=-{b}")), len);
        let want = if b == 0 { Answer::Unsatisfiable } else { Answer::Part { first: len.saturating_sub(b), last: len - 1 } };
        prop_assert_eq!(got, want);
    }
}
