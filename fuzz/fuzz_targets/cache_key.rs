//! Cache keys, families, TTL rules and cache directives for any request target and headers.
//! The property lives in `bcproxy::fuzzing::cache_key`, so the corpus replays as a test too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bcproxy::fuzzing::cache_key(data));
