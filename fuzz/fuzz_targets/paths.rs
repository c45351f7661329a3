//! Path checks and Location rewriting: no panic, no accepted path that climbs out of the prefix.
//! The property lives in `bcproxy::fuzzing::paths`, so the corpus replays as a test too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bcproxy::fuzzing::paths(data));
