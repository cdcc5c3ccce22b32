//! The sans-I/O stack's one crypto backend: `ring`, behind rtc-crypto's
//! provider traits, and the self-signed DTLS certificate.
//!
//! rtc-crypto's own ring provider (`crypto-ring`) also links RustCrypto's
//! AES, CTR, CCM, CBC, HMAC and SHA-1 beside ring's, and rtc-dtls's feature of
//! the same name links rustls's and rcgen's ring providers and webpki, none of
//! which a data channel authenticated by `a=fingerprint` uses. This provider
//! implements what ICE, STUN, TURN and DTLS 1.2 need here, all with ring:
//!
//! - SHA-256, HMAC-SHA-256 (DTLS PRF, fingerprints) and HMAC-SHA-1 (STUN
//!   MESSAGE-INTEGRITY); MD5 (the TURN long-term key, RFC 8489 §9.2.2) is
//!   the one primitive ring lacks and comes from `md-5`;
//! - AES-GCM, the record cipher of TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
//!   which Chromium, Firefox and aiortc all offer and rtc-dtls prefers (the
//!   CBC, CCM and ChaCha20 suites rtc-dtls also knows are not offered:
//!   rtc-dtls offers only what [`RTCCrypto::supports`] reports);
//! - ECDHE over P-256, X25519 and P-384;
//! - an ECDSA P-256 certificate key, and verification of the signature
//!   schemes rtc-crypto's ring provider verifies (ECDSA P-256/P-384, Ed25519,
//!   RSA PKCS#1), so a browser certificate made with
//!   `RTCPeerConnection.generateCertificate` of any kind is still accepted.

use std::sync::Arc;

use md5::{Digest, Md5};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, KeyPair};
use ring::{aead, agreement, digest, hmac};
use rtc_crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, CryptoAlgorithm, CryptoError, HashAlgorithm,
    HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, PublicKeyEncoding, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SecretVec, SignatureScheme, SigningKey,
};
use rtc_dtls::crypto::Certificate;

/// The provider every machine of a connection is given.
pub(super) fn provider() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(RingProvider)
}

/// SHA-256 of `data` (certificate fingerprints).
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// A self-signed ECDSA P-256 certificate for `name`, as WebRTC endpoints
/// use (the peer checks it against `a=fingerprint`, not a CA). The same
/// certificate rcgen's `generate_simple_self_signed` makes, with the key made
/// and held by `crypto`.
pub(super) fn self_signed_certificate(
    crypto: &dyn RTCCrypto,
    name: &str,
) -> Result<Certificate, String> {
    let key = crypto
        .generate_signing_key(SignatureScheme::EcdsaP256Sha256)
        .map_err(|e| e.to_string())?;
    let signer = CertificateKey(Arc::clone(&key));
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    // What rcgen derives when it has a hash of its own: the first 20 bytes
    // of the public key's SHA-256, positive (RFC 5280 §4.1.2.2).
    let mut serial = sha256(key.public_key().bytes);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..20]));
    let cert = params.self_signed(&signer).map_err(|e| e.to_string())?;
    Ok(Certificate::from_signing_key(vec![cert.der().clone()], key))
}

/// The provider's key, as rcgen signs the certificate with it.
struct CertificateKey(Arc<dyn SigningKey>);

impl rcgen::PublicKeyData for CertificateKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().bytes
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CertificateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0
            .sign(SignatureScheme::EcdsaP256Sha256, msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

struct RingProvider;

impl RTCCryptoProvider for RingProvider {
    fn name(&self) -> &'static str {
        "beeline-ring"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self
    }

    fn random(&self) -> &dyn RTCRandom {
        self
    }
}

/// Bytes of OS randomness fetched at a time. DTLS asks for 8 bytes per
/// record (the AES-GCM explicit nonce); one `getrandom` call per record cost
/// home-peer a measurable share of its CPU in bulk transfers (`perf`:
/// `crng_make_state` and the syscall path), so each thread draws from a pool
/// refilled from the OS. Every byte is handed out once.
const POOL: usize = 1024;

thread_local! {
    static POOLED: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
        std::cell::RefCell::new((Box::new([0; POOL]), POOL));
}

impl RTCRandom for RingProvider {
    fn fill(&self, output: &mut [u8]) -> Result<(), CryptoError> {
        let failed = |_| CryptoError::RandomnessFailed;
        if output.len() > POOL / 4 {
            return SystemRandom::new().fill(output).map_err(failed);
        }
        POOLED.with(|pool| {
            let (bytes, used) = &mut *pool.borrow_mut();
            if POOL - *used < output.len() {
                SystemRandom::new().fill(&mut bytes[..]).map_err(failed)?;
                *used = 0;
            }
            let taken = &mut bytes[*used..*used + output.len()];
            output.copy_from_slice(taken);
            // Handed out: never again.
            taken.fill(0);
            *used += output.len();
            Ok(())
        })
    }
}

impl RTCCrypto for RingProvider {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        matches!(
            algorithm,
            CryptoAlgorithm::Hash(HashAlgorithm::Md5 | HashAlgorithm::Sha256)
                | CryptoAlgorithm::Hmac(HmacAlgorithm::Sha1 | HmacAlgorithm::Sha256)
                | CryptoAlgorithm::Aead(AeadAlgorithm::Aes128Gcm | AeadAlgorithm::Aes256Gcm)
                | CryptoAlgorithm::KeyExchange(
                    KeyExchangeAlgorithm::P256
                        | KeyExchangeAlgorithm::X25519
                        | KeyExchangeAlgorithm::P384
                )
                | CryptoAlgorithm::SigningKeyGeneration(SignatureScheme::EcdsaP256Sha256)
                | CryptoAlgorithm::SigningKeyImport(SignatureScheme::EcdsaP256Sha256)
        ) || matches!(algorithm, CryptoAlgorithm::Signature(scheme) if verification(scheme).is_some())
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match algorithm {
            HashAlgorithm::Md5 => Ok(Md5::digest(data).to_vec()),
            HashAlgorithm::Sha256 => Ok(sha256(data).to_vec()),
            _ => Err(unsupported(CryptoAlgorithm::Hash(algorithm))),
        }
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        let ring_algorithm = match algorithm {
            HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
            _ => return Err(unsupported(CryptoAlgorithm::Hmac(algorithm))),
        };
        Ok(Box::new(RingMac {
            key: hmac::Key::new(ring_algorithm, key),
            output_len: algorithm.output_len(),
        }))
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        let ring_algorithm = match algorithm {
            AeadAlgorithm::Aes128Gcm => &aead::AES_128_GCM,
            AeadAlgorithm::Aes256Gcm => &aead::AES_256_GCM,
            _ => return Err(unsupported(CryptoAlgorithm::Aead(algorithm))),
        };
        if key.len() != ring_algorithm.key_len() {
            return Err(CryptoError::InvalidKeyLength {
                expected: ring_algorithm.key_len(),
                actual: key.len(),
            });
        }
        let key = aead::UnboundKey::new(ring_algorithm, key)
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        Ok(Box::new(RingAead(aead::LessSafeKey::new(key))))
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let ring_algorithm = match algorithm {
            KeyExchangeAlgorithm::P256 => &agreement::ECDH_P256,
            KeyExchangeAlgorithm::X25519 => &agreement::X25519,
            KeyExchangeAlgorithm::P384 => &agreement::ECDH_P384,
            _ => return Err(unsupported(CryptoAlgorithm::KeyExchange(algorithm))),
        };
        let private_key =
            agreement::EphemeralPrivateKey::generate(ring_algorithm, &SystemRandom::new())
                .map_err(|_| CryptoError::RandomnessFailed)?;
        let public_key = private_key
            .compute_public_key()
            .map_err(|_| CryptoError::Provider("key exchange public-key generation failed".into()))?
            .as_ref()
            .to_vec();
        Ok(Box::new(RingKeyExchange {
            algorithm,
            ring_algorithm,
            private_key,
            public_key,
        }))
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        if scheme != SignatureScheme::EcdsaP256Sha256 {
            return Err(unsupported(CryptoAlgorithm::SigningKeyGeneration(scheme)));
        }
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| CryptoError::RandomnessFailed)?;
        self.import_signing_key(scheme, pkcs8.as_ref())
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        if scheme != SignatureScheme::EcdsaP256Sha256 {
            return Err(unsupported(CryptoAlgorithm::SigningKeyImport(scheme)));
        }
        let key = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8_der,
            &SystemRandom::new(),
        )
        .map_err(|_| CryptoError::InvalidPrivateKey)?;
        let public_key = key.public_key().as_ref().to_vec();
        Ok(Arc::new(EcdsaP256Key {
            key,
            public_key,
            pkcs8_der: SecretVec::new(pkcs8_der.to_vec()),
        }))
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let (algorithm, encoding) =
            verification(scheme).ok_or_else(|| unsupported(CryptoAlgorithm::Signature(scheme)))?;
        if public_key.encoding != encoding {
            return Err(CryptoError::InvalidPublicKey);
        }
        signature::UnparsedPublicKey::new(algorithm, public_key.bytes)
            .verify(message, signature)
            .map_err(|_| CryptoError::InvalidSignature)
    }
}

fn unsupported(algorithm: CryptoAlgorithm) -> CryptoError {
    CryptoError::UnsupportedAlgorithm(algorithm)
}

/// The ring verifier for `scheme`, and the encoding its public key comes in.
fn verification(
    scheme: SignatureScheme,
) -> Option<(
    &'static dyn signature::VerificationAlgorithm,
    PublicKeyEncoding,
)> {
    use PublicKeyEncoding::{EcUncompressedPoint, Ed25519Raw, RsaPkcs1Der};
    Some(match scheme {
        SignatureScheme::EcdsaP256Sha256 => {
            (&signature::ECDSA_P256_SHA256_ASN1, EcUncompressedPoint)
        }
        SignatureScheme::EcdsaP384Sha256 => {
            (&signature::ECDSA_P384_SHA256_ASN1, EcUncompressedPoint)
        }
        SignatureScheme::EcdsaP384Sha384 => {
            (&signature::ECDSA_P384_SHA384_ASN1, EcUncompressedPoint)
        }
        SignatureScheme::Ed25519 => (&signature::ED25519, Ed25519Raw),
        SignatureScheme::RsaPkcs1Sha1 => (
            &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            RsaPkcs1Der,
        ),
        SignatureScheme::RsaPkcs1Sha256 => (
            &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            RsaPkcs1Der,
        ),
        SignatureScheme::RsaPkcs1Sha384 => (&signature::RSA_PKCS1_2048_8192_SHA384, RsaPkcs1Der),
        SignatureScheme::RsaPkcs1Sha512 => (
            &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            RsaPkcs1Der,
        ),
        _ => return None,
    })
}

/// HMAC with the key schedule derived once (`hmac::Key::new`).
struct RingMac {
    key: hmac::Key,
    output_len: usize,
}

impl Mac for RingMac {
    fn output_len(&self) -> usize {
        self.output_len
    }

    fn sign(&mut self, input: &[&[u8]], output: &mut [u8]) -> Result<(), CryptoError> {
        if output.len() != self.output_len {
            return Err(CryptoError::InvalidTagLength {
                expected: self.output_len,
                actual: output.len(),
            });
        }
        let mut context = hmac::Context::with_key(&self.key);
        for part in input {
            context.update(part);
        }
        output.copy_from_slice(context.sign().as_ref());
        Ok(())
    }

    fn verify(&mut self, input: &[&[u8]], expected: &[u8]) -> Result<(), CryptoError> {
        let mut actual = vec![0; self.output_len];
        self.sign(input, &mut actual)?;
        if rtc_crypto::constant_time_eq(&actual, expected) {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

struct RingAead(aead::LessSafeKey);

fn nonce(nonce: &[u8]) -> Result<aead::Nonce, CryptoError> {
    aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::InvalidNonceLength {
        expected: NONCE_LEN,
        actual: nonce.len(),
    })
}

fn check_tag(tag: &[u8]) -> Result<(), CryptoError> {
    if tag.len() == TAG_LEN {
        Ok(())
    } else {
        Err(CryptoError::InvalidTagLength {
            expected: TAG_LEN,
            actual: tag.len(),
        })
    }
}

impl AeadCipher for RingAead {
    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn seal_in_place(
        &mut self,
        nonce_bytes: &[u8],
        aad: &[u8],
        plaintext_and_ciphertext: &mut [u8],
        tag_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        check_tag(tag_out)?;
        let tag = self
            .0
            .seal_in_place_separate_tag(
                nonce(nonce_bytes)?,
                aead::Aad::from(aad),
                plaintext_and_ciphertext,
            )
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn open_in_place(
        &mut self,
        nonce_bytes: &[u8],
        aad: &[u8],
        ciphertext_and_plaintext: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        check_tag(tag)?;
        let tag = aead::Tag::try_from(tag).map_err(|_| CryptoError::AuthenticationFailed)?;
        self.0
            .open_in_place_separate_tag(
                nonce(nonce_bytes)?,
                aead::Aad::from(aad),
                tag,
                ciphertext_and_plaintext,
                0..,
            )
            .map(|_| ())
            .map_err(|_| CryptoError::AuthenticationFailed)
    }
}

struct RingKeyExchange {
    algorithm: KeyExchangeAlgorithm,
    ring_algorithm: &'static agreement::Algorithm,
    private_key: agreement::EphemeralPrivateKey,
    public_key: Vec<u8>,
}

impl ActiveKeyExchange for RingKeyExchange {
    fn algorithm(&self) -> KeyExchangeAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn complete(self: Box<Self>, peer_public_key: &[u8]) -> Result<SecretVec, CryptoError> {
        let peer = agreement::UnparsedPublicKey::new(self.ring_algorithm, peer_public_key);
        agreement::agree_ephemeral(self.private_key, &peer, |secret| {
            SecretVec::new(secret.to_vec())
        })
        .map_err(|_| CryptoError::InvalidPublicKey)
    }
}

/// The certificate's key.
struct EcdsaP256Key {
    key: signature::EcdsaKeyPair,
    public_key: Vec<u8>,
    pkcs8_der: SecretVec,
}

impl SigningKey for EcdsaP256Key {
    fn supports(&self, scheme: SignatureScheme) -> bool {
        scheme == SignatureScheme::EcdsaP256Sha256
    }

    fn public_key(&self) -> PublicKey<'_> {
        PublicKey {
            encoding: PublicKeyEncoding::EcUncompressedPoint,
            bytes: &self.public_key,
        }
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !self.supports(scheme) {
            return Err(unsupported(CryptoAlgorithm::Signature(scheme)));
        }
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| CryptoError::Provider("signature generation failed".into()))
    }

    fn to_pkcs8_der(&self) -> Result<Option<SecretVec>, CryptoError> {
        Ok(Some(self.pkcs8_der.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_self_signed_p256_and_its_key_signs() {
        let crypto = provider();
        let cert = self_signed_certificate(crypto.crypto(), "beeline").expect("certificate");
        assert_eq!(cert.certificate.len(), 1);
        let key = &cert.private_key.signing_key;
        let message = b"server key exchange";
        let signature = key
            .sign(SignatureScheme::EcdsaP256Sha256, message)
            .expect("sign");
        crypto
            .crypto()
            .verify_signature(
                SignatureScheme::EcdsaP256Sha256,
                key.public_key(),
                message,
                &signature,
            )
            .expect("verifies");
    }

    #[test]
    fn hashes_and_macs_match_known_answers() {
        let crypto = provider();
        let c = crypto.crypto();
        // RFC 1321 and FIPS 180-2 test vectors for "abc".
        assert_eq!(
            c.hash(HashAlgorithm::Md5, b"abc").unwrap(),
            [
                0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
                0x7f, 0x72
            ]
        );
        assert_eq!(sha256(b"abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
        // RFC 2202 test case 2 (HMAC-SHA-1, key "Jefe").
        let mut mac = c.new_hmac(HmacAlgorithm::Sha1, b"Jefe").unwrap();
        let mut tag = [0; 20];
        mac.sign(&[b"what do ya want ", b"for nothing?"], &mut tag)
            .unwrap();
        assert_eq!(tag[..4], [0xef, 0xfc, 0xdf, 0x6a]);
        mac.verify(&[b"what do ya want for nothing?"], &tag)
            .unwrap();
    }

    #[test]
    fn random_bytes_are_never_handed_out_twice() {
        let provider = RingProvider;
        let mut seen = std::collections::HashSet::new();
        // Several refills of the pool, in record-nonce-sized draws, and a
        // draw larger than the pool's share.
        for _ in 0..1000 {
            let mut nonce = [0u8; 8];
            provider.fill(&mut nonce).unwrap();
            assert!(seen.insert(nonce), "a nonce came out twice");
        }
        let mut big = [0u8; 600];
        provider.fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn only_gcm_record_ciphers_are_offered() {
        let crypto = provider();
        let c = crypto.crypto();
        assert!(c.supports(CryptoAlgorithm::Aead(AeadAlgorithm::Aes128Gcm)));
        assert!(!c.supports(CryptoAlgorithm::Aead(AeadAlgorithm::ChaCha20Poly1305)));
        assert!(!c.supports(CryptoAlgorithm::Cbc(rtc_crypto::CbcAlgorithm::Aes256Cbc)));
        let mut aead = c.new_aead(AeadAlgorithm::Aes128Gcm, &[7; 16]).unwrap();
        let mut data = *b"hello";
        let mut tag = [0; 16];
        aead.seal_in_place(&[1; 12], b"aad", &mut data, &mut tag)
            .unwrap();
        aead.open_in_place(&[1; 12], b"aad", &mut data, &tag)
            .unwrap();
        assert_eq!(&data, b"hello");
    }
}
