//! A sealed cookie jar or Set-Cookie seal comes back from the page: any
//! bytes must be refused or opened, never panic, and only a real seal opens.
#![no_main]

use beeline_seal::CookieKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = CookieKey::from_home_token("fuzz-home-token");
    assert!(key.open_jar("session", text, 1_000, 3_600).is_err());
    assert!(key.open_set_cookies("session", text, 1_000, 120).is_err());
});
