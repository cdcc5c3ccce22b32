//! TLS for `turns:` servers (the `turn-tls` feature, on by default).
//!
//! Servers are verified by rustls (on ring) against Mozilla's roots
//! (`webpki-roots`) plus the PEM certificates the embedder puts in
//! [`crate::PeerConfig::turn_tls_roots`], for the URL's host: a DNS name, or
//! an IP address (which the certificate must carry as an IP subject
//! alternative name).
//!
//! Without the feature the rustls client and the roots (about half a
//! megabyte, `just size`) are not linked: [`TlsTarget`] has no value, so no
//! relay can ask for TLS, and `turns:` URLs are skipped with a WARN.

#[cfg(feature = "turn-tls")]
pub(super) use enabled::{tls_config, TlsTarget};

#[cfg(not(feature = "turn-tls"))]
pub(super) use disabled::TlsTarget;

#[cfg(feature = "turn-tls")]
mod enabled {
    use std::sync::Arc;

    use tokio::net::TcpStream;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::TlsConnector;

    use super::super::stream::{Conn, Failure};
    use crate::Error;

    /// What to verify a `turns:` server against.
    #[derive(Debug, Clone)]
    pub(in crate::sansio) struct TlsTarget {
        config: Arc<ClientConfig>,
        /// The URL's host.
        name: ServerName<'static>,
    }

    impl TlsTarget {
        /// The target for `host` (a DNS name or an IP address).
        pub(in crate::sansio) fn new(config: Arc<ClientConfig>, host: &str) -> Result<Self, Error> {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| Error::InvalidConfig(format!("{host:?} is not a TLS server name")))?;
            Ok(Self { config, name })
        }

        /// The TLS handshake over a connected `tcp`.
        pub(in crate::sansio) async fn handshake(
            self,
            tcp: TcpStream,
        ) -> Result<Box<dyn Conn>, Failure> {
            let stream = TlsConnector::from(self.config)
                .connect(self.name, tcp)
                .await
                .map_err(|e| Failure::Tls(e.to_string()))?;
            Ok(Box::new(stream))
        }
    }

    /// The TLS client configuration for `turns:` servers: Mozilla's roots
    /// and `extra_pem` (PEM text, one or more certificates each), on ring.
    pub(in crate::sansio) fn tls_config(extra_pem: &[String]) -> Result<Arc<ClientConfig>, Error> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for (i, pem) in extra_pem.iter().enumerate() {
            let bad = |why: String| Error::InvalidConfig(format!("turn_tls_roots[{i}]: {why}"));
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
                found += 1;
            }
            if found == 0 {
                return Err(bad("no PEM certificate in it".into()));
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Failed(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn extra_roots_must_hold_a_certificate() {
            assert!(tls_config(&[]).is_ok());
            assert!(matches!(
                tls_config(&["not a certificate".into()]),
                Err(Error::InvalidConfig(_))
            ));
        }

        #[test]
        fn tls_targets_name_dns_hosts_and_ip_addresses() {
            let config = tls_config(&[]).unwrap();
            let ip = TlsTarget::new(Arc::clone(&config), "203.0.113.1").unwrap();
            assert!(matches!(ip.name, ServerName::IpAddress(_)));
            let dns = TlsTarget::new(Arc::clone(&config), "turn.example.com").unwrap();
            assert!(matches!(dns.name, ServerName::DnsName(_)));
            assert!(TlsTarget::new(config, "not a name!").is_err());
        }
    }
}

#[cfg(not(feature = "turn-tls"))]
mod disabled {
    use tokio::net::TcpStream;

    use super::super::stream::{Conn, Failure};

    /// Without the feature there is no TLS target: no relay asks for TLS.
    #[derive(Debug, Clone)]
    pub(in crate::sansio) enum TlsTarget {}

    impl TlsTarget {
        pub(in crate::sansio) async fn handshake(
            self,
            _tcp: TcpStream,
        ) -> Result<Box<dyn Conn>, Failure> {
            match self {}
        }
    }
}
