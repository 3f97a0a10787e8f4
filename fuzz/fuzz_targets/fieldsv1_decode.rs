//! FieldSet::decode on arbitrary JSON; a decoded set touches its own paths.
#![no_main]

#[path = "../../tests/support/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::fieldsv1_decode(data));
