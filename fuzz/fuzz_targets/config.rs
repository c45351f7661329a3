//! Config parsing: any text is either settings or one error naming a key; never a panic.
//! The property lives in `bcproxy::fuzzing::config`, so the corpus replays as a test too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bcproxy::fuzzing::config(data));
