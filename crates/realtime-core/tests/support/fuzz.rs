//! The harness of the property-based fuzz targets (`crates/*/tests/fuzz_*.rs`):
//! the proptest configuration they all run with and the per-property case
//! counter whose lines `scripts/fuzz` collects. Every fuzz target includes
//! this file as its `fuzz` module:
//!
//! ```ignore
//! #[path = "support/fuzz.rs"] // or "../../realtime-core/tests/support/fuzz.rs"
//! mod fuzz;
//!
//! use fuzz::{config, Cases};
//! ```
//!
//! Not every target uses every item here.

#![allow(dead_code)]

use std::cell::Cell;
use std::time::Instant;

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// Cases per property unless `PROPTEST_CASES` says otherwise (the
/// `proptest!` macro reads it over this value).
const CASES: u32 = 256;

/// The configuration of every property: `CASES` cases, and failing cases
/// saved in `<target>.proptest-regressions` beside the target's own source
/// file (`proptest!` names the file it is written in, not this one) and
/// replayed first on every later run.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Counts a property's cases and prints the count and time when done
/// (`scripts/fuzz` collects these lines).
pub struct Cases {
    name: &'static str,
    count: Cell<u64>,
    started: Instant,
}

impl Cases {
    pub fn new(name: &'static str) -> Self {
        Cases {
            name,
            count: Cell::new(0),
            started: Instant::now(),
        }
    }

    /// Counts one case.
    pub fn hit(&self) {
        self.count.set(self.count.get() + 1);
    }

    /// The cases counted so far.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

impl Drop for Cases {
    fn drop(&mut self) {
        eprintln!(
            "fuzz {}: {} cases in {:.2} s",
            self.name,
            self.count.get(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Percent-encodes every byte but the unreserved ones, so any text fits a
/// URI.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
