//! Sealed cookie jars end to end (`docs/cookies.md`), with a Rust client
//! doing what client.js does: a cookie-login app behind the home peer sees
//! the browser's cookies on the channel, and its `Set-Cookie` reaches the
//! browser's real jar through signal-api.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use beeline_bridge::{
    Client, ClientError, ClientOptions, CookieKey, DataChannelLink, HttpUpstream,
};
use beeline_client::open_channel;
use beeline_frame::v2::RequestHead;
use beeline_home::HomeConfig;
use beeline_signal_client::SignalClient;
use beeline_signal_server::{SignalConfig, SignalServer};
use tokio_util::sync::CancellationToken;

mod common;
use common::{loopback_peer, serve, TOKEN};

/// A cookie-login app: `POST /login` sets an HttpOnly session cookie,
/// `GET /me` needs it, `POST /logout` clears it; `GET /cookies` echoes the
/// `Cookie` header it got.
fn login_app() -> Router {
    fn session(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("sid=").map(str::to_owned))
            .filter(|s| s == "s3cret-alice")
    }
    Router::new()
        .route(
            "/login",
            post(|body: String| async move {
                if body != "user=alice&password=pw" {
                    return (StatusCode::UNAUTHORIZED, [("set-cookie", "x=y")], "no");
                }
                (
                    StatusCode::OK,
                    [(
                        "set-cookie",
                        "sid=s3cret-alice; HttpOnly; Path=/; SameSite=Lax",
                    )],
                    "welcome",
                )
            }),
        )
        .route(
            "/me",
            get(|headers: HeaderMap| async move {
                match session(&headers) {
                    Some(_) => (StatusCode::OK, "alice"),
                    None => (StatusCode::UNAUTHORIZED, "log in first"),
                }
            }),
        )
        .route(
            "/cookies",
            get(|headers: HeaderMap| async move {
                headers
                    .get("cookie")
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_default()
            }),
        )
}

struct World {
    signal_url: String,
    _db: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn world() -> World {
    let db = tempfile::tempdir().unwrap();
    let server = SignalServer::open(SignalConfig::new(db.path().join("signal.db"), TOKEN))
        .await
        .unwrap();
    let signal_url = format!("{}/webrtc", serve(server.router()).await);
    let upstream = Arc::new(HttpUpstream::new(&serve(login_app()).await).unwrap());
    let shutdown = CancellationToken::new();
    let config = HomeConfig {
        peer: loopback_peer(),
        cookie_key: Some(CookieKey::from_home_token(TOKEN)),
        ..Default::default()
    };
    let home_signal = SignalClient::new(&signal_url).unwrap().with_bearer(TOKEN);
    tokio::spawn(beeline_home::run(
        home_signal,
        upstream,
        config,
        shutdown.clone(),
    ));
    World {
        signal_url,
        _db: db,
        shutdown,
    }
}

fn head(method: &str, path: &str, jar: Option<&str>) -> RequestHead {
    let mut head = RequestHead {
        method: method.into(),
        path: path.into(),
        ..Default::default()
    };
    if let Some(jar) = jar {
        head.headers.insert("x-beeline-jar".into(), jar.into());
    }
    head
}

async fn text(
    client: &Client<DataChannelLink>,
    head: RequestHead,
    body: Option<&str>,
) -> (u16, String) {
    use futures::StreamExt as _;
    let body = body.map(|b| {
        futures::stream::once(futures::future::ready(Ok(bytes::Bytes::from(b.to_owned())))).boxed()
    });
    let r = client.send(head, body).await.unwrap();
    let status = r.status;
    (
        status,
        String::from_utf8(r.body.collect().await.unwrap()).unwrap(),
    )
}

/// What client.js does with a sealed `Set-Cookie`: hands it to signal-api
/// with the browser's cookies; returns the `Set-Cookie` headers and the new jar.
async fn exchange(
    signal_url: &str,
    browser_cookies: &str,
    session: &str,
    sealed: Option<&str>,
) -> (u16, Vec<String>, Option<String>) {
    let mut body = serde_json::json!({ "session_id": session });
    if let Some(sealed) = sealed {
        body["set_cookie"] = sealed.into();
    }
    let r = reqwest::Client::new()
        .post(format!("{signal_url}/cookie"))
        .header("cookie", browser_cookies)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let json: serde_json::Value = r.json().await.unwrap_or_default();
    (status, set, json["cookie_jar"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_login_works_on_the_channel() {
    let world = world().await;
    // The browser already holds a non-session cookie for the origin.
    let signal = SignalClient::new(&world.signal_url)
        .unwrap()
        .with_cookie("theme", "dark")
        .unwrap();
    let opened = open_channel(&signal, loopback_peer(), Duration::from_secs(15))
        .await
        .unwrap();
    let session = opened.session_id.clone();
    let jar = opened.session.cookie_jar.clone().expect("a sealed jar");
    assert!(!jar.contains("dark"), "the page must not read its cookies");
    let client = Client::connect(
        Arc::new(DataChannelLink::new(opened.channel)),
        ClientOptions {
            cookies: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(client.agree().features.iter().any(|f| f == "cookies"));

    // The jar's cookies reach the app.
    let (_, seen) = text(&client, head("GET", "/cookies", Some(&jar)), None).await;
    assert_eq!(seen, "theme=dark");
    assert_eq!(
        text(&client, head("GET", "/me", Some(&jar)), None).await.0,
        401
    );

    // Log in over the channel: the Set-Cookie travels sealed.
    let mut login = head("POST", "/login", Some(&jar));
    login.headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    let r = client
        .send(
            login,
            Some({
                use futures::StreamExt as _;
                futures::stream::once(futures::future::ready(Ok(bytes::Bytes::from_static(
                    b"user=alice&password=pw",
                ))))
                .boxed()
            }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!r
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("set-cookie")));
    let sealed = r.headers["x-beeline-set-cookie"].clone();
    assert!(!sealed.contains("s3cret"));
    r.body.collect().await.unwrap();

    // signal-api sets it for real, HttpOnly and all, and gives the new jar.
    let (status, set, new_jar) =
        exchange(&world.signal_url, "theme=dark", &session, Some(&sealed)).await;
    assert_eq!(status, 200);
    assert_eq!(
        set,
        vec!["sid=s3cret-alice; HttpOnly; Path=/; SameSite=Lax"]
    );
    let new_jar = new_jar.unwrap();
    let (status, me) = text(&client, head("GET", "/me", Some(&new_jar)), None).await;
    assert_eq!((status, me.as_str()), (200, "alice"));
    let (_, seen) = text(&client, head("GET", "/cookies", Some(&new_jar)), None).await;
    assert_eq!(seen, "theme=dark; sid=s3cret-alice");

    // Without the jar, or with a forged one, there is no session.
    assert_eq!(text(&client, head("GET", "/me", None), None).await.0, 401);
    let mut forged = new_jar.clone().into_bytes();
    let n = forged.len() - 2;
    forged[n] = if forged[n] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    match client.send(head("GET", "/me", Some(&forged)), None).await {
        Err(ClientError::Stream { code, .. }) => assert_eq!(code, "bad_request"),
        Err(other) => panic!("forged jar: {other}"),
        Ok(r) => panic!("forged jar answered {}", r.status),
    }
    // A client-sent Cookie cannot smuggle the session either way: the jar
    // is the page's only way to carry HttpOnly cookies.
    let (status, _) = text(&client, head("GET", "/me", Some(&jar)), None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_cookies_open_only_for_their_own_session() {
    let world = world().await;
    let signal = SignalClient::new(&world.signal_url).unwrap();
    let a = signal.create_session().await.unwrap();
    let b = signal.create_session().await.unwrap();
    let key = CookieKey::from_home_token(TOKEN);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sealed_for_a = key.seal_set_cookies(&a.session_id, &["sid=evil; HttpOnly".to_owned()], now);
    // Handed in under session b: refused, nothing set.
    let (status, set, _) =
        exchange(&world.signal_url, "", &b.session_id, Some(&sealed_for_a)).await;
    assert_eq!(status, 400);
    assert!(set.is_empty());
    // Forged by someone without the home token: refused.
    let forged = CookieKey::from_home_token("not the token").seal_set_cookies(
        &a.session_id,
        &["sid=evil".to_owned()],
        now,
    );
    let (status, set, _) = exchange(&world.signal_url, "", &a.session_id, Some(&forged)).await;
    assert_eq!((status, set.len()), (400, 0));
    // Too old: refused.
    let stale = key.seal_set_cookies(&a.session_id, &["sid=old".to_owned()], now - 3600);
    assert_eq!(
        exchange(&world.signal_url, "", &a.session_id, Some(&stale))
            .await
            .0,
        400
    );
    // An unknown session: 404, as everywhere.
    assert_eq!(exchange(&world.signal_url, "", "nope", None).await.0, 404);
    // Without lines: a fresh jar of the browser's cookies now.
    let (status, set, jar) = exchange(&world.signal_url, "a=1", &a.session_id, None).await;
    assert_eq!((status, set.len()), (200, 0));
    assert_eq!(
        key.open_jar(&a.session_id, &jar.unwrap(), now, 60)
            .as_deref(),
        Ok("a=1")
    );
}
