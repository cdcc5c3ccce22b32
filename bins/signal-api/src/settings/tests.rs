//! Precedence, secrets and the errors a misconfiguration gets.

use std::path::Path;

use clap::{CommandFactory as _, FromArgMatches as _};

use super::*;

fn parse(args: &[&str]) -> (Cli, ArgMatches) {
    let matches = Cli::command()
        .try_get_matches_from(std::iter::once("signal-api").chain(args.iter().copied()))
        .unwrap();
    (Cli::from_arg_matches(&matches).unwrap(), matches)
}

fn file(text: &str) -> FileConfig {
    toml::from_str(text).unwrap()
}

fn resolve(args: &[&str], text: &str) -> anyhow::Result<Settings> {
    let (cli, matches) = parse(args);
    Settings::resolve(cli, &matches, file(text))
}

fn home<'a>(settings: &'a Settings, name: &str) -> &'a str {
    &settings
        .config
        .homes
        .iter()
        .find(|h| h.name == name)
        .unwrap()
        .token
}

#[test]
fn flags_override_the_file_and_the_file_fills_the_rest() {
    let settings = resolve(
        &[
            "--home-token",
            "flag-token",
            "--stun-url",
            "stun:a",
            "--stun-url",
            "stun:b",
            "--max-polls-per-identity",
            "3",
        ],
        r#"
            home_token = "file-token"
            browser_auth = "open"
            base_path = "/jarvis-api/webrtc"
            stun_url = ["stun:file"]
            turn_urls = ["turn:file"]
            turn_secret = "s"
            listen = "127.0.0.1:0"
            max_polls_per_identity = 9
            sessions_per_ip_per_minute = 7
            "#,
    )
    .unwrap();
    assert_eq!(home(&settings, DEFAULT_HOME), "flag-token");
    assert_eq!(settings.config.homes.len(), 1);
    assert_eq!(settings.config.stun_urls, ["stun:a", "stun:b"]);
    assert_eq!(settings.config.turn_urls, ["turn:file"]);
    assert!(settings.config.turn_secrets.is_some());
    assert_eq!(settings.config.base_path, "/jarvis-api/webrtc");
    assert!(matches!(settings.browser_auth, BrowserAuth::Open));
    assert_eq!(
        settings.listen,
        "127.0.0.1:0".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(settings.config.database, Database::from(DEFAULT_DB));
    assert_eq!(settings.config.limits.max_polls_per_identity, 3);
    assert_eq!(settings.config.limits.sessions_per_ip_per_minute, 7);
    assert_eq!(settings.config.limits.max_messages_per_session, 200);
}

#[test]
fn browser_auth_is_required_and_explained() {
    let err = resolve(&["--home-token", "t"], "").unwrap_err();
    let text = format!("{err:#}");
    for mode in ["--browser-auth open", "jwt", "proxy-header"] {
        assert!(text.contains(mode), "{text}");
    }
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-file\n").unwrap();
    let settings = resolve(
        &[
            "--home-token-file",
            path.to_str().unwrap(),
            "--browser-auth",
            "open",
        ],
        "home_token = \"ignored\"",
    )
    .unwrap();
    assert_eq!(home(&settings, DEFAULT_HOME), "from-file");
}

#[test]
fn token_and_token_file_on_the_command_line_conflict() {
    assert!(resolve(
        &[
            "--home-token",
            "a",
            "--home-token-file",
            "b",
            "--browser-auth",
            "open"
        ],
        ""
    )
    .is_err());
}

#[test]
fn named_homes_come_from_files_env_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let kitchen = dir.path().join("kitchen");
    std::fs::write(&kitchen, "kitchen-token\n").unwrap();
    std::env::set_var("BEELINE_TEST_ATTIC_TOKEN", "attic-token");
    let settings = resolve(
        &[
            "--home",
            &format!("kitchen=file:{}", kitchen.display()),
            "--home",
            "attic=env:BEELINE_TEST_ATTIC_TOKEN",
            "--browser-auth",
            "open",
            "--default-home",
            "kitchen",
        ],
        r#"
            [homes.kitchen]
            token = "overridden-by-the-flag"
            [homes.cellar]
            token = "cellar-token"
        "#,
    )
    .unwrap();
    assert_eq!(home(&settings, "kitchen"), "kitchen-token");
    assert_eq!(home(&settings, "attic"), "attic-token");
    assert_eq!(home(&settings, "cellar"), "cellar-token");
    assert_eq!(settings.config.default_home.as_deref(), Some("kitchen"));
    assert!(resolve(&["--home", "kitchen", "--browser-auth", "open"], "").is_err());
    assert!(resolve(&["--home", "k=ftp:x", "--browser-auth", "open"], "").is_err());
    assert!(resolve(
        &["--browser-auth", "open"],
        "[homes.k]\ntoken = \"a\"\ntoken_env = \"B\""
    )
    .is_err());
}

#[test]
fn jwt_and_proxy_modes_need_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt");
    std::fs::write(&secret, "shh\n").unwrap();
    let base = ["--home-token", "t", "--browser-auth"];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        resolve(&args, "")
    };
    let err = format!("{:#}", with(&["jwt"]).err().unwrap());
    assert!(err.contains("--jwt-secret-file"), "{err}");
    let ok = with(&[
        "jwt",
        "--jwt-secret-file",
        secret.to_str().unwrap(),
        "--jwt-cookie",
        "c",
    ])
    .unwrap();
    assert!(
        matches!(ok.browser_auth, BrowserAuth::Jwt { key: JwtKeySource::Key(JwtKey::Hs256(ref k)), cookie: Some(_), .. } if k == b"shh")
    );
    let err = format!("{:#}", with(&["proxy-header"]).err().unwrap());
    assert!(err.contains("--trusted-proxy"), "{err}");
    let ok = with(&[
        "proxy-header",
        "--trusted-proxy",
        "127.0.0.1",
        "--trusted-proxy",
        "10.0.0.0/8",
    ])
    .unwrap();
    assert_eq!(ok.config.trusted_proxies.len(), 2);
    assert!(
        matches!(ok.browser_auth, BrowserAuth::ProxyHeader { ref header } if header == DEFAULT_PROXY_USER_HEADER)
    );
}

/// A public key without --jwt-algorithm is taken as the library
/// detects it (`JwtKey::from_public_pem`); with one, as it says.
#[test]
fn a_public_key_file_gives_the_key_of_its_type() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/signal-server/tests/fixtures"
    );
    let key = |file: &str, algorithm: Option<&str>| -> anyhow::Result<JwtKey> {
        let path = format!("{fixtures}/{file}");
        let mut args = vec![
            "--home-token",
            "t",
            "--browser-auth",
            "jwt",
            "--jwt-public-key-file",
            &path,
        ];
        if let Some(algorithm) = algorithm {
            args.extend(["--jwt-algorithm", algorithm]);
        }
        match resolve(&args, "")?.browser_auth {
            BrowserAuth::Jwt {
                key: JwtKeySource::Key(key),
                ..
            } => Ok(key),
            _ => panic!("not a JWT key"),
        }
    };
    assert!(matches!(
        key("rs256-public.pem", None),
        Ok(JwtKey::Rs256Pem(_))
    ));
    assert!(matches!(
        key("es256-public.pem", None),
        Ok(JwtKey::Es256Pem(_))
    ));
    assert!(matches!(
        key("es256-public.pem", Some("es256")),
        Ok(JwtKey::Es256Pem(_))
    ));
    let error = key("README.md", None).unwrap_err();
    assert!(
        format!("{error:#}").contains("neither an RSA nor an EC"),
        "{error:#}"
    );
}

#[test]
fn turn_host_expands_to_udp_tcp_and_tls_urls() {
    let settings = resolve(
        &[
            "--home-token",
            "t",
            "--browser-auth",
            "open",
            "--turn-host",
            "turn.example.com",
            "--turn-secret",
            "s",
        ],
        "",
    )
    .unwrap();
    assert_eq!(settings.config.stun_urls, ["stun:turn.example.com:3478"]);
    assert_eq!(
        settings.config.turn_urls,
        [
            "turn:turn.example.com:3478?transport=udp",
            "turn:turn.example.com:3478?transport=tcp",
            "turns:turn.example.com:443?transport=tcp",
        ]
    );
}

#[test]
fn headers_to_strip_come_from_flags_or_the_file() {
    let text = r#"
        home_token = "t"
        browser_auth = "open"
        strip_header = ["X-Auth-Token"]
    "#;
    let from_file = resolve(&[], text).unwrap();
    assert_eq!(from_file.config.strip_request_headers, ["X-Auth-Token"]);
    let from_flags = resolve(
        &[
            "--strip-header",
            "Remote-Email",
            "--strip-header",
            "x-user-id,x-groups",
        ],
        text,
    )
    .unwrap();
    assert_eq!(
        from_flags.config.strip_request_headers,
        ["Remote-Email", "x-user-id", "x-groups"]
    );
    let none = resolve(&["--home-token", "t", "--browser-auth", "open"], "").unwrap();
    assert!(none.config.strip_request_headers.is_empty());
}

#[test]
fn unknown_file_keys_are_rejected() {
    assert!(toml::from_str::<FileConfig>("home_tokn = \"typo\"").is_err());
    assert!(toml::from_str::<FileConfig>("browser_auth = \"closed\"").is_err());
    assert!(toml::from_str::<FileConfig>("browser_auth = \"proxy-header\"").is_ok());
}

#[test]
fn the_example_config_parses() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/signal-api.toml"
    );
    let file = FileConfig::load(Path::new(example)).unwrap();
    assert_eq!(file.browser_auth, Some(BrowserAuthMode::Jwt));
    assert!(file.turn_secret_file.is_some());
}

/// A PostgreSQL URL in the file is a URL, not a path to put under the
/// file's folder; a relative file path still is.
#[test]
fn a_database_url_in_the_file_stays_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signal-api.toml");
    let url = "postgres://beeline:pw@db.internal:5432/beeline";
    std::fs::write(&path, format!("db = \"{url}\"\ndb_pool_size = 4\n")).unwrap();
    let loaded = FileConfig::load(&path).unwrap();
    assert_eq!(loaded.db.as_deref(), Some(Path::new(url)));
    let (cli, matches) = parse(&["--home-token", "t", "--browser-auth", "open"]);
    let settings = Settings::resolve(cli, &matches, loaded).unwrap();
    assert_eq!(settings.config.database, Database::Postgres(url.into()));
    assert_eq!(settings.config.postgres.pool_size, 4);
    std::fs::write(&path, "db = \"signal.db\"\n").unwrap();
    let loaded = FileConfig::load(&path).unwrap();
    assert_eq!(loaded.db, Some(dir.path().join("signal.db")));
    assert!(resolve(
        &[
            "--home-token",
            "t",
            "--browser-auth",
            "open",
            "--db-pool-size",
            "0"
        ],
        ""
    )
    .is_err());
}
