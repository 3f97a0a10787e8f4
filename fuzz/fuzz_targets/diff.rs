//! diff on two arbitrary JSON values (concatenated); sorted, no-op agreement, path round trip.
#![no_main]

#[path = "../../tests/support/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::diff_pair(data));
