//! A frame connection to an `https://` signal-api whose certificate comes
//! from a private CA: refused with the public roots alone, opened with the
//! CA in `FrameOptions::roots`.

use std::sync::Arc;

use beeline_bridge::Channel as _;
use beeline_client::{frame_connection, FrameOptions, TrustedRoots};
use futures::SinkExt as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A CA, and a certificate for 127.0.0.1 it signed.
fn private_ca() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca_pem, cert.der().clone(), key)
}

/// The handshake callback: the session's frames path, nothing else.
#[allow(clippy::result_large_err)] // the signature tungstenite asks for
fn frames_path_only(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    assert_eq!(request.uri().to_string(), "/webrtc/frames?session_id=s1");
    Ok(response)
}

/// Serves WebSockets over TLS on loopback: each accepted one at
/// `/webrtc/frames?session_id=s1` gets one binary message. Returns the
/// signaling base URL.
async fn tls_frames_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Bounded: the test makes two connections.
        for _ in 0..2 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut socket) =
                    tokio_tungstenite::accept_hdr_async(tls, frames_path_only).await
                else {
                    return;
                };
                let _ = socket
                    .send(Message::binary(b"hello over TLS".to_vec()))
                    .await;
                // Held open until the client goes.
                let _ = futures::StreamExt::next(&mut socket).await;
            });
        }
    });
    format!("https://127.0.0.1:{port}/webrtc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_when_given() {
    let (ca_pem, cert, key) = private_ca();
    let base = tls_frames_server(cert, key).await;

    let refused = frame_connection(&base, "s1", &FrameOptions::default())
        .await
        .expect_err("the public roots do not know this CA");
    assert!(
        refused.to_string().contains("UnknownIssuer"),
        "refused for another reason: {refused}"
    );

    let options = FrameOptions {
        roots: TrustedRoots::from_pem(ca_pem.as_bytes()).unwrap(),
        ..Default::default()
    };
    let frames = frame_connection(&base, "s1", &options).await.unwrap();
    let received = tokio::time::timeout(std::time::Duration::from_secs(5), frames.recv())
        .await
        .expect("a message within 5 s")
        .expect("the connection is open");
    assert_eq!(&received.data[..], b"hello over TLS");
    assert!(received.binary);
}
