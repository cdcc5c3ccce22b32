//! An embedding Rust server mounts the router under its own app and
//! supplies the auth check: its middleware finds the user and
//! [`ExtensionAuth`] hands that identity to signaling.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::Request, middleware::Next, response::Response, Router};
use beeline_signal_client::{SignalClient, SignalError, SignalMessage};
use beeline_signal_server::{ExtensionAuth, Identity, SignalConfig, SignalServer};

/// The host app's own session check, reduced to a header lookup.
async fn host_app_auth(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-app-session")
        .and_then(|v| v.to_str().ok())
        .and_then(|session| session.strip_prefix("session-of-"))
        .map(Identity::new);
    if let Some(identity) = user {
        request.extensions_mut().insert(identity);
    }
    next.run(request).await
}

#[tokio::test]
async fn host_app_middleware_decides_who_the_browser_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SignalConfig::new(dir.path().join("signal.db"), "home-token");
    config.base_path = "/jarvis-api/webrtc".into();
    config.browser_auth = Arc::new(ExtensionAuth);
    let signaling = SignalServer::open(config).await.unwrap();
    let app = Router::new()
        .route(
            "/jarvis-api/hello",
            axum::routing::get(|| async { "host app" }),
        )
        .fallback_service(signaling.router())
        .layer(axum::middleware::from_fn(host_app_auth));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = signaling.shutdown_token();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .unwrap();
    });
    let base = format!("http://{addr}/jarvis-api/webrtc");
    let as_session = |session: &str| {
        SignalClient::new(&base)
            .unwrap()
            .with_header("x-app-session", session)
            .unwrap()
    };

    let hello = reqwest::get(format!("http://{addr}/jarvis-api/hello"))
        .await
        .unwrap();
    assert_eq!(hello.text().await.unwrap(), "host app");

    let grace = as_session("session-of-grace");
    let session = grace.create_session().await.unwrap();
    grace
        .post(&SignalMessage::offer(&session.session_id, "v=0"))
        .await
        .unwrap();
    let err = as_session("session-of-heidi")
        .poll(Some(&session.session_id), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 404, .. }),
        "{err:?}"
    );
    let err = SignalClient::new(&base)
        .unwrap()
        .create_session()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SignalError::Http { status: 401, .. }),
        "{err:?}"
    );

    let home = SignalClient::new(&base).unwrap().with_bearer("home-token");
    assert_eq!(home.poll(None, 0).await.unwrap().messages.len(), 1);

    signaling.shutdown();
    server.await.unwrap();
}
