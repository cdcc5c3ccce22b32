//! The config file (`--config`): the flags' keys in snake_case, all
//! optional, with relative paths taken relative to the file.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use beeline_signal_server::Database;
use serde::Deserialize;

use super::cli::{BrowserAuthMode, JwtAlgorithm, LoopbackOfferMode};

/// One `[homes.NAME]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHome {
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
}

/// The config file: the flags' keys in snake_case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(super) listen: Option<SocketAddr>,
    pub(super) db: Option<PathBuf>,
    pub(super) db_pool_size: Option<usize>,
    pub(super) base_path: Option<String>,
    pub(super) relay_upstream: Option<String>,
    #[serde(alias = "strip_header")]
    pub(super) strip_headers: Option<Vec<String>>,
    pub(super) cookie_jar: Option<bool>,
    pub(super) home_link: Option<bool>,
    pub(super) loopback_offer: Option<LoopbackOfferMode>,
    pub(super) log_json: Option<bool>,
    pub(super) home_token: Option<String>,
    pub(super) home_token_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) homes: BTreeMap<String, FileHome>,
    pub(super) default_home: Option<String>,
    pub(super) browser_auth: Option<BrowserAuthMode>,
    pub(super) jwt_secret: Option<String>,
    pub(super) jwt_secret_file: Option<PathBuf>,
    pub(super) jwt_public_key_file: Option<PathBuf>,
    pub(super) jwt_jwks_file: Option<PathBuf>,
    pub(super) jwt_max_lifetime_secs: Option<u64>,
    pub(super) jwt_algorithm: Option<JwtAlgorithm>,
    pub(super) jwt_cookie: Option<String>,
    pub(super) jwt_issuer: Option<String>,
    pub(super) jwt_audience: Option<String>,
    pub(super) proxy_user_header: Option<String>,
    #[serde(alias = "trusted_proxy")]
    pub(super) trusted_proxies: Option<Vec<String>>,
    #[serde(alias = "cors_origin")]
    pub(super) cors_origins: Option<Vec<String>>,
    pub(super) turn_secret: Option<String>,
    pub(super) turn_secret_file: Option<PathBuf>,
    pub(super) turn_previous_secret: Option<String>,
    pub(super) turn_previous_secret_file: Option<PathBuf>,
    pub(super) turn_host: Option<String>,
    pub(super) turn_port: Option<u16>,
    pub(super) turns_port: Option<u16>,
    #[serde(alias = "stun_urls")]
    pub(super) stun_url: Option<Vec<String>>,
    #[serde(alias = "turn_urls")]
    pub(super) turn_url: Option<Vec<String>>,
    pub(super) credential_ttl: Option<u64>,
    pub(super) long_poll_timeout: Option<u64>,
    pub(super) session_ttl: Option<u64>,
    pub(super) tombstone_ttl: Option<u64>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_sdp_bytes: Option<usize>,
    pub(super) max_messages_per_session: Option<u32>,
    pub(super) max_candidate_bytes: Option<usize>,
    pub(super) posts_per_session_per_minute: Option<u32>,
    pub(super) posts_per_identity_per_minute: Option<u32>,
    pub(super) max_live_sessions_per_identity: Option<u32>,
    pub(super) max_live_sessions_per_ip: Option<u32>,
    pub(super) sessions_per_identity_per_minute: Option<u32>,
    pub(super) sessions_per_ip_per_minute: Option<u32>,
    pub(super) max_polls_per_identity: Option<u32>,
}

impl FileConfig {
    /// Reads `path`; relative paths inside it are taken relative to its folder.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new(""));
        // A PostgreSQL URL is no path.
        if let Some(db) = &mut file.db {
            if matches!(Database::from(&*db), Database::Sqlite(_)) && db.is_relative() {
                *db = folder.join(&*db);
            }
        }
        let relative_paths = [
            &mut file.home_token_file,
            &mut file.turn_secret_file,
            &mut file.turn_previous_secret_file,
            &mut file.jwt_secret_file,
            &mut file.jwt_public_key_file,
            &mut file.jwt_jwks_file,
        ]
        .into_iter()
        .chain(file.homes.values_mut().map(|home| &mut home.token_file));
        for relative in relative_paths.flatten() {
            if relative.is_relative() {
                *relative = folder.join(&*relative);
            }
        }
        Ok(file)
    }
}
