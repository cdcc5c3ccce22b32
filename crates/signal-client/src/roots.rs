//! Certificate authorities trusted for signal-api's `https://` and `wss://`
//! URLs besides the public ones.
//!
//! beeline's clients (home-peer's polls and home link, beeline-proxy's
//! signaling, frame connection and relay) trust the public roots compiled
//! into them (Mozilla's, from `webpki-roots`). A signal-api behind a proxy
//! with a private CA's certificate needs that CA too: [`TrustedRoots`] holds
//! it, parsed from PEM, and hands the same set to every client that reaches
//! signal-api (reqwest for HTTP, a rustls configuration for WebSockets).

use std::sync::Arc;

use rustls_pki_types::{pem::PemObject as _, CertificateDer};
use tokio_rustls::rustls;

/// Why a set of extra roots was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootsError {
    /// The PEM text holds no `CERTIFICATE` block.
    #[error("no certificate in the PEM text (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A `CERTIFICATE` block is not valid PEM.
    #[error("a certificate in the PEM text is not valid PEM: {0}")]
    Pem(String),
    /// A certificate is not one rustls can use as a root (not X.509 DER, or
    /// a key it cannot read).
    #[error("certificate {index} cannot be a root: {reason}")]
    Invalid {
        /// Its position among the roots added so far, from 1.
        index: usize,
        /// What rustls said.
        reason: String,
    },
    /// rustls could not make a client configuration (no protocol version
    /// its crypto provider supports).
    #[error("no TLS client configuration: {0}")]
    Tls(String),
}

/// Extra certificate authorities to trust, on top of the public roots.
///
/// Empty by default: only the public roots are trusted. Build it with
/// [`TrustedRoots::from_pem`], give it to [`SignalClient::with_roots`] and
/// to whatever else reaches the same server ([`TrustedRoots::tls_config`]
/// for a WebSocket connector).
///
/// [`SignalClient::with_roots`]: crate::SignalClient::with_roots
#[derive(Clone, Default)]
pub struct TrustedRoots {
    extra: Vec<CertificateDer<'static>>,
    /// Built whenever roots are added, so that handing it out cannot fail.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TrustedRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRoots")
            .field("extra", &self.extra.len())
            .finish()
    }
}

impl TrustedRoots {
    /// Every `CERTIFICATE` block of `pem` (other blocks, such as a key, are
    /// skipped). Each must be usable as a root; at least one is needed.
    pub fn from_pem(pem: &[u8]) -> Result<Self, RootsError> {
        let mut roots = Self::default();
        roots.add_pem(pem)?;
        Ok(roots)
    }

    /// Adds every `CERTIFICATE` block of `pem` (one PEM file of several),
    /// as [`TrustedRoots::from_pem`] reads them; on an error nothing is
    /// added.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<(), RootsError> {
        let more = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RootsError::Pem(e.to_string()))?;
        if more.is_empty() {
            return Err(RootsError::NoCertificate);
        }
        let extra: Vec<_> = self.extra.iter().cloned().chain(more).collect();
        // What rustls would refuse at the first connection is refused now.
        self.tls = Some(tls_config(&extra)?);
        self.extra = extra;
        Ok(())
    }

    /// How many extra roots there are.
    pub fn len(&self) -> usize {
        self.extra.len()
    }

    /// Whether only the public roots are trusted.
    pub fn is_empty(&self) -> bool {
        self.extra.is_empty()
    }

    /// A rustls client configuration trusting the public roots and these,
    /// for a WebSocket connector (`tokio_tungstenite::Connector::Rustls`)
    /// or any other TLS client. `None` when there are no extra roots: the
    /// connector's own default then trusts the same public roots.
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// `builder` trusting these roots too, for another HTTP client that
    /// reaches the same server (beeline-proxy's relay).
    pub fn add_to_reqwest(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for der in &self.extra {
            // from_pem checked that every one parses as a certificate.
            if let Ok(certificate) = reqwest::Certificate::from_der(der) {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder
    }
}

/// The public roots and `extra`, on ring (the crypto the rest of beeline's
/// TLS uses).
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let mut store = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, der) in extra.iter().enumerate() {
        store.add(der.clone()).map_err(|e| RootsError::Invalid {
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RootsError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn certificates_are_taken_and_other_blocks_skipped() {
        let pem = format!(
            "{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            ca_pem(),
            ca_pem()
        );
        let mut roots = TrustedRoots::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(roots.len(), 2);
        roots.add_pem(ca_pem().as_bytes()).unwrap();
        assert_eq!(roots.len(), 3);
        assert!(roots.add_pem(b"").is_err());
        assert_eq!(roots.len(), 3, "a refused file adds nothing");
        let config = roots.tls_config().expect("a configuration");
        assert!(config.alpn_protocols.is_empty());
        assert!(TrustedRoots::default().tls_config().is_none());
    }

    #[test]
    fn text_without_a_usable_certificate_is_refused() {
        assert!(matches!(
            TrustedRoots::from_pem(b"not pem at all"),
            Err(RootsError::NoCertificate)
        ));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TrustedRoots::from_pem(garbage.as_bytes()),
            Err(RootsError::Invalid { index: 1, .. })
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(TrustedRoots::from_pem(broken.as_bytes()).is_err());
    }
}
