//! Rust ↔ Rust on loopback: 10 MB and 1,000 small messages, both ways
//! (the far end echoes), intact and in order.

mod common;

use std::sync::Arc;

use common::{echo, echo_exchange, Pair};

const TOTAL: usize = 10 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_and_a_thousand_messages_each_way() {
    let pair = Pair::connect().await;

    // Offerer sends, answerer echoes.
    let (client, server) = pair.channel("to-answerer").await;
    let echoing = echo(server);
    let secs = echo_exchange(Arc::new(client), TOTAL, 64 * 1024).await;
    println!(
        "offerer → answerer → offerer: 10 MiB echoed in {secs:.2} s ({:.1} MiB/s each way)",
        10.0 / secs
    );
    echoing.abort();

    // Answerer opens, sends with the largest messages the offerer accepts.
    let opened = pair.answerer.open_channel("to-offerer").await.unwrap();
    let accepted = common::within(10, pair.offerer.accept_channel())
        .await
        .unwrap();
    let echoing = echo(accepted);
    let max = opened.max_message_size();
    let secs = echo_exchange(Arc::new(opened), TOTAL, max).await;
    println!(
        "answerer → offerer → answerer: 10 MiB in {} B messages echoed in {secs:.2} s",
        max
    );
    echoing.abort();
    pair.close().await;
}
