//! The request-smuggling guard: any byte stream, split anywhere, is either passed through
//! unchanged or cut at a refusal; it never panics.
#![no_main]

use bcproxy::framing::scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else { return };
    let at = usize::from(split).min(stream.len());
    let whole = scan(&[stream]);
    let split_up = scan(&[&stream[..at], &stream[at..]]);
    assert_eq!(whole, split_up, "the guard depends on how the bytes arrive");
    if !whole.windows(17).any(|w| w == b"x-bcproxy-refused") {
        assert!(stream.starts_with(&whole), "bytes were changed without a refusal");
    }
});
