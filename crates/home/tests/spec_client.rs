//! A client that speaks exactly the specification's frame format reaches an
//! upstream service through signal-api and the home peer, over a real data
//! channel on loopback.

mod common;

use std::time::Duration;

use beeline_transport::DataChannel;
use common::{browser_connect, sse_reply, world};

/// Collects `chunk` data per id until every id has its `done`.
async fn collect(
    channel: &DataChannel,
    ids: &[String],
) -> std::collections::HashMap<String, (String, u64)> {
    let mut out: std::collections::HashMap<String, (String, u64)> = Default::default();
    let mut done = 0;
    while done < ids.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), channel.recv())
            .await
            .expect("frame in time")
            .expect("open");
        // The specification's frames, read as plain JSON.
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(ids.contains(&id), "frame for unknown id {id}");
        let entry = out.entry(id).or_default();
        match v["type"].as_str().unwrap() {
            "chunk" => entry.0.push_str(v["data"].as_str().unwrap()),
            "done" => {
                entry.1 = v["status"].as_u64().unwrap();
                done += 1;
            }
            other => panic!("unexpected frame type {other}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specification_request_frame_streams_the_upstream_body() {
    let world = world().await;
    let (_peer, channel) = browser_connect(&world.signal_url).await;

    // The request exactly as the specification writes it: base64 body.
    let body = r#"{"message": "hello from the couch"}"#;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let frame =
        format!(r#"{{"id": "req-uuid", "method": "POST", "path": "/v1/chat", "body": "{b64}"}}"#);
    channel.send_text(&frame).await.unwrap();

    let got = collect(&channel, &["req-uuid".to_owned()]).await;
    let (data, status) = &got["req-uuid"];
    assert_eq!(data, &sse_reply("hello from the couch").concat());
    assert_eq!(*status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_requests_in_flight_on_one_channel() {
    let world = world().await;
    let (_peer, channel) = browser_connect(&world.signal_url).await;
    use base64::Engine as _;
    let ids: Vec<String> = (0..10).map(|i| format!("req-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = format!(r#"{{"message": "request number {i} says hi"}}"#);
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        channel
            .send_text(&format!(r#"{{"id":"{id}","method":"POST","path":"/v1/chat","headers":{{"content-type":"application/json"}},"body":"{b64}"}}"#))
            .await
            .unwrap();
    }
    let got = collect(&channel, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        let (data, status) = &got[id];
        assert_eq!(
            data,
            &sse_reply(&format!("request number {i} says hi")).concat(),
            "{id}"
        );
        assert_eq!(*status, 200);
    }
}
