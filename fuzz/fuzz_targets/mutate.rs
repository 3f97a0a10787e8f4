//! The full Engine::mutate on an arbitrary review; the JSONPatch applies to request.object, touches only the stamp, and a repeat is a no-op.
#![no_main]

#[path = "../../tests/support/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::mutate(data));
