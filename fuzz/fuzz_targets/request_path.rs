//! Any request target from the network must normalize or be refused, never
//! panic; what normalizes must be stable (normalizing again changes
//! nothing), must stay absolute, and must hold no dot segment that a server
//! behind could resolve above the root.
#![no_main]

use beeline_frame::proxy::{join_prefix, normalize_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = normalize_path(target) {
        assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
        assert_eq!(normalize_path(&path).as_deref(), Ok(path.as_str()));
        let only_path = path.split('?').next().unwrap_or_default();
        assert!(
            !only_path.split('/').any(|s| s == ".." || s == "."),
            "{path:?}"
        );
        assert!(join_prefix("/api/", &path).starts_with("/api/"));
    }
});
