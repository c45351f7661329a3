//! The request-smuggling guard: any byte stream, split anywhere, passes unchanged or is cut at a refusal.
//! The property lives in `bcproxy::fuzzing::framing`, so the corpus replays as a test too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bcproxy::fuzzing::framing(data));
