//! The store-header parsers: any status and header values read without a panic.
//! The property lives in `bcproxy::fuzzing::store_headers`, so the corpus replays as a test too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bcproxy::fuzzing::store_headers(data));
