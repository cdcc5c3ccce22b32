//! A Rust server serves its own axum `Router` over a channel in-process, no
//! loopback TCP, through `ServiceUpstream`; the Rust client talks v2 to it.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
mod common;

use beeline_bridge::{serve, BridgeConfig, Client, ClientOptions, ServiceUpstream};
use beeline_frame::v2::RequestHead;
use bytes::Bytes;
use common::pipe;
use futures::StreamExt as _;

#[tokio::test]
async fn an_axum_router_served_in_process() {
    let app = Router::new()
        .route(
            "/hello",
            get(|h: axum::http::HeaderMap| async move {
                let who = h
                    .get("x-who")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                ([("x-served-by", "router")], format!("hello {who}"))
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }));
    // `hello` is once per channel: one channel per framing.
    for binary in [true, false] {
        let (client_end, server_end) = pipe(16 * 1024);
        let (client_end, server_end) = (Arc::new(client_end), Arc::new(server_end));
        tokio::spawn(serve(
            server_end,
            Arc::new(ServiceUpstream::new(app.clone())),
            BridgeConfig::default(),
        ));
        let client = Client::connect(
            Arc::clone(&client_end),
            ClientOptions {
                binary,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut head = RequestHead {
            method: "GET".into(),
            path: "/hello".into(),
            ..Default::default()
        };
        head.headers.insert("x-who".into(), "rust".into());
        let r = client.send(head, None).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-served-by"], "router");
        assert_eq!(r.body.collect().await.unwrap(), b"hello rust");

        // 300 kB of binary through 16 KiB frames, both ways.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let body = futures::stream::iter(
            data.chunks(50_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .boxed();
        let head = RequestHead {
            method: "POST".into(),
            path: "/echo".into(),
            ..Default::default()
        };
        let r = client.send(head, Some(body)).await.unwrap();
        assert_eq!(r.body.collect().await.unwrap(), data);

        let missing = client
            .send(
                RequestHead {
                    method: "GET".into(),
                    path: "/nope".into(),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(missing.status, 404);
        drop(client);
    }
}
