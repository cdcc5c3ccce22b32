//! Rotating browser-JWT keys with no restart: the JWKS file is re-read when
//! its modification time or size changes (checked every
//! [`CHECK_EVERY`]) and at once on SIGHUP. A file that cannot be read or
//! parsed is logged and the keys in use stay as they were.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use beeline_signal_server::JwtKeys;

/// How often the JWKS file's metadata is looked at.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Keeps `keys` in step with the file at `path`, for the life of the process.
pub(crate) async fn watch(path: PathBuf, keys: JwtKeys) {
    let stamp = |path: &PathBuf| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut seen = stamp(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(hangup) => tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => false,
                _ = hangup.recv() => true,
            },
            None => {
                tokio::time::sleep(CHECK_EVERY).await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tokio::time::sleep(CHECK_EVERY).await;
            false
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| keys.replace_from_jwks(&text).map_err(|e| e.to_string()))
        {
            Ok(()) => {
                tracing::info!(kids = keys.kids().join(","), path = %path.display(), "JWT keys reloaded");
            }
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "JWKS not reloaded; the keys in use stay");
            }
        }
    }
}
