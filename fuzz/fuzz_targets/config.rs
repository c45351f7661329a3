//! Config parsing: any text is either settings or one error naming a key; never a panic.
#![no_main]

use bcproxy::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Err(e) = Settings::from_toml(data, Default::default()) {
        assert!(!e.key.is_empty() || !e.message.is_empty());
    }
});
