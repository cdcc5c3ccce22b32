//! Browser authentication by JWT ([`JwtAuth`]), with key sets for rotation
//! without a cutover: several keys told apart by `kid`, from PEM files or a
//! JWKS document, replaceable while the server runs ([`JwtKeys`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::auth::{AuthRejection, BrowserAuth, BrowserRequest, Identity};

/// A public key or shared secret that verifies browser JWTs.
#[derive(Clone)]
#[non_exhaustive]
pub enum JwtKey {
    /// HS256 with this shared secret.
    Hs256(Vec<u8>),
    /// RS256 with this PEM public key (`-----BEGIN PUBLIC KEY-----`).
    Rs256Pem(Vec<u8>),
    /// ES256 (P-256) with this PEM public key.
    Es256Pem(Vec<u8>),
}

impl JwtKey {
    /// The key of a PEM public key, its algorithm told by its type: RS256
    /// for an RSA key, ES256 for an EC (P-256) key.
    pub fn from_public_pem(pem: Vec<u8>) -> Result<Self, JwtKeyError> {
        if DecodingKey::from_rsa_pem(&pem).is_ok() {
            return Ok(JwtKey::Rs256Pem(pem));
        }
        if DecodingKey::from_ec_pem(&pem).is_ok() {
            return Ok(JwtKey::Es256Pem(pem));
        }
        Err(JwtKeyError::UnknownPublicKey)
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtKey::Hs256(_) => "Hs256(<redacted>)",
            JwtKey::Rs256Pem(_) => "Rs256Pem(..)",
            JwtKey::Es256Pem(_) => "Es256Pem(..)",
        })
    }
}

/// A JWT key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtKeyError {
    /// The HS256 secret is empty.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// The public key is not a PEM key of the expected type.
    #[error("invalid JWT public key")]
    InvalidKey(#[source] jsonwebtoken::errors::Error),
    /// A PEM public key is neither an RSA nor an EC key
    /// ([`JwtKey::from_public_pem`]).
    #[error("the JWT public key is neither an RSA nor an EC PEM public key")]
    UnknownPublicKey,
    /// A key set would be empty.
    #[error("no JWT key is configured")]
    NoKeys,
    /// A JWKS document could not be used.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
}

/// One verifying key, with the only algorithm it accepts.
#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl VerifyingKey {
    fn from_key(key: JwtKey) -> Result<Self, JwtKeyError> {
        let (key, algorithm) = match key {
            JwtKey::Hs256(secret) if secret.is_empty() => return Err(JwtKeyError::EmptySecret),
            JwtKey::Hs256(secret) => (DecodingKey::from_secret(&secret), Algorithm::HS256),
            JwtKey::Rs256Pem(pem) => (
                DecodingKey::from_rsa_pem(&pem).map_err(JwtKeyError::InvalidKey)?,
                Algorithm::RS256,
            ),
            JwtKey::Es256Pem(pem) => (
                DecodingKey::from_ec_pem(&pem).map_err(JwtKeyError::InvalidKey)?,
                Algorithm::ES256,
            ),
        };
        Ok(Self { key, algorithm })
    }
}

/// The keys a [`JwtAuth`] verifies with: the one key without a `kid` (for
/// tokens that carry none) and any number told apart by `kid`. Shared by
/// every clone of its `JwtAuth`; [`replace`](Self::replace) swaps them while
/// the server runs, so a key is added before tokens signed with it appear
/// and removed once they are gone, with no restart.
#[derive(Clone, Default)]
pub struct JwtKeys {
    inner: Arc<RwLock<KeySet>>,
}

#[derive(Default)]
struct KeySet {
    unnamed: Option<VerifyingKey>,
    named: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.inner.read().expect("not poisoned");
        let mut ids: Vec<&String> = set.named.keys().collect();
        ids.sort();
        f.debug_struct("JwtKeys")
            .field("unnamed", &set.unnamed.is_some())
            .field("kids", &ids)
            .finish()
    }
}

impl JwtKeys {
    /// A key set: `unnamed` verifies tokens without a `kid`; each of
    /// `named` verifies tokens whose `kid` is its name.
    pub fn new(
        unnamed: Option<JwtKey>,
        named: impl IntoIterator<Item = (String, JwtKey)>,
    ) -> Result<Self, JwtKeyError> {
        let keys = Self::default();
        keys.replace(unnamed, named)?;
        Ok(keys)
    }

    /// Replaces every key at once. On an error nothing changes.
    pub fn replace(
        &self,
        unnamed: Option<JwtKey>,
        named: impl IntoIterator<Item = (String, JwtKey)>,
    ) -> Result<(), JwtKeyError> {
        let set = KeySet {
            unnamed: unnamed.map(VerifyingKey::from_key).transpose()?,
            named: named
                .into_iter()
                .map(|(kid, key)| Ok((kid, VerifyingKey::from_key(key)?)))
                .collect::<Result<_, JwtKeyError>>()?,
        };
        if set.unnamed.is_none() && set.named.is_empty() {
            return Err(JwtKeyError::NoKeys);
        }
        *self.inner.write().expect("not poisoned") = set;
        Ok(())
    }

    /// Replaces every key with those of a JWKS document
    /// (`{"keys": [{"kid": ..., "kty": ..., ...}]}`, RFC 7517). Each key
    /// needs a `kid`; its algorithm is its `alg`, or RS256 for RSA, ES256
    /// for EC and HS256 for `oct` keys. On an error nothing changes.
    pub fn replace_from_jwks(&self, jwks: &str) -> Result<(), JwtKeyError> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks).map_err(|e| JwtKeyError::Jwks(e.to_string()))?;
        let mut named = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .filter(|kid| !kid.is_empty())
                .ok_or_else(|| JwtKeyError::Jwks("every key needs a kid".to_owned()))?;
            named.insert(kid, jwk_key(jwk)?);
        }
        if named.is_empty() {
            return Err(JwtKeyError::NoKeys);
        }
        *self.inner.write().expect("not poisoned") = KeySet {
            unnamed: None,
            named,
        };
        Ok(())
    }

    /// The `kid`s currently accepted, sorted.
    pub fn kids(&self) -> Vec<String> {
        let set = self.inner.read().expect("not poisoned");
        let mut ids: Vec<String> = set.named.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn find(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        let set = self.inner.read().expect("not poisoned");
        match kid {
            Some(kid) => set.named.get(kid).cloned(),
            None => set.unnamed.clone(),
        }
    }
}

fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Result<VerifyingKey, JwtKeyError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm};
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => inferred,
        Some(KeyAlgorithm::HS256) => Algorithm::HS256,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(other) => {
            return Err(JwtKeyError::Jwks(format!(
                "algorithm {other:?} is not supported (HS256, RS256, ES256, EdDSA)"
            )))
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(JwtKeyError::InvalidKey)?;
    Ok(VerifyingKey { key, algorithm })
}

/// Verifies a JWT from `Authorization: Bearer` or from a cookie.
///
/// The token's key is found by its `kid` header (a token without one uses
/// the key without a name), and the token must be signed with that key's
/// algorithm only (no algorithm confusion). It must carry `exp` (checked,
/// 60 s leeway) and a non-empty `sub`, which becomes the [`Identity`]; `nbf`
/// is checked when present; `iss` and `aud` are checked when configured,
/// and a lifetime cap when set. An optional `homes` claim (array of home
/// names) restricts the homes the user may reach.
#[derive(Clone)]
pub struct JwtAuth {
    keys: JwtKeys,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Option<Duration>,
    cookie: Option<String>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("keys", &self.keys)
            .field("cookie", &self.cookie)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    homes: Option<Vec<String>>,
    #[serde(default)]
    iat: Option<u64>,
    exp: u64,
}

impl JwtAuth {
    /// Verifies tokens without a `kid` with `key`, read from
    /// `Authorization: Bearer`.
    pub fn new(key: JwtKey) -> Result<Self, JwtKeyError> {
        Ok(Self::with_keys(JwtKeys::new(Some(key), [])?))
    }

    /// Verifies tokens with the keys of `keys`, which may be replaced later.
    pub fn with_keys(keys: JwtKeys) -> Self {
        Self {
            keys,
            issuer: None,
            audience: None,
            max_lifetime: None,
            cookie: None,
        }
    }

    /// The key set, to replace keys while the server runs.
    pub fn keys(&self) -> &JwtKeys {
        &self.keys
    }

    /// Also accepts the token from cookie `name` when there is no bearer.
    pub fn with_cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(name.into());
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Requires `aud` to contain `audience`.
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Refuses tokens whose `exp` is more than `max` after their `iat`
    /// (and tokens without `iat`), so a leaked long-lived token is useless.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    fn validation(&self, algorithm: Algorithm) -> jsonwebtoken::Validation {
        let mut validation = jsonwebtoken::Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        // A token that is not valid yet is refused too (same 60 s leeway).
        validation.validate_nbf = true;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
        }
        validation
    }
}

impl BrowserAuth for JwtAuth {
    fn authenticate(&self, request: &BrowserRequest<'_>) -> Result<Identity, AuthRejection> {
        let token = request
            .bearer()
            .or_else(|| self.cookie.as_deref().and_then(|name| request.cookie(name)))
            .ok_or_else(|| {
                AuthRejection::new(match &self.cookie {
                    Some(cookie) => format!(
                        "authentication required: send a JWT as a bearer token or in the {cookie:?} cookie"
                    ),
                    None => "authentication required: send a JWT as a bearer token".to_owned(),
                })
            })?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthRejection::new("invalid token: the token is not a valid JWT"))?;
        let key = self.keys.find(header.kid.as_deref()).ok_or_else(|| {
            AuthRejection::new(match &header.kid {
                Some(_) => "invalid token: its key id (kid) is not one this server accepts",
                None => "invalid token: it names no key id (kid)",
            })
        })?;
        let validation = self.validation(key.algorithm);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                    ErrorKind::InvalidIssuer => "the token has the wrong issuer",
                    ErrorKind::InvalidAudience => "the token has the wrong audience",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks exp or sub",
                    _ => "the token is not a valid JWT",
                };
                tracing::debug!(%error, "browser JWT refused");
                AuthRejection::new(format!("invalid token: {why}"))
            })?;
        let claims = data.claims;
        if let Some(max) = self.max_lifetime {
            let lifetime = claims.iat.map(|iat| claims.exp.saturating_sub(iat));
            match lifetime {
                Some(secs) if secs <= max.as_secs() => {}
                Some(_) => {
                    return Err(AuthRejection::new(format!(
                        "invalid token: it lives longer than this server allows ({} s)",
                        max.as_secs()
                    )))
                }
                None => {
                    return Err(AuthRejection::new(
                        "invalid token: it has no iat, and this server caps token lifetimes",
                    ))
                }
            }
        }
        if claims.sub.is_empty() {
            return Err(AuthRejection::new("invalid token: sub is empty"));
        }
        let identity = Identity::new(claims.sub);
        Ok(match claims.homes {
            Some(homes) => identity.with_homes(homes),
            None => identity,
        })
    }

    fn mode(&self) -> &'static str {
        "jwt"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &[u8] = include_bytes!("../tests/fixtures/rs256-public.pem");
    const EC: &[u8] = include_bytes!("../tests/fixtures/es256-public.pem");

    #[test]
    fn a_public_key_is_rs256_or_es256_by_its_type() {
        assert!(matches!(
            JwtKey::from_public_pem(RSA.to_vec()),
            Ok(JwtKey::Rs256Pem(pem)) if pem == RSA
        ));
        assert!(matches!(
            JwtKey::from_public_pem(EC.to_vec()),
            Ok(JwtKey::Es256Pem(pem)) if pem == EC
        ));
        for bad in [
            &b"not a key"[..],
            b"",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let error = JwtKey::from_public_pem(bad.to_vec()).unwrap_err();
            assert!(matches!(error, JwtKeyError::UnknownPublicKey), "{error:?}");
        }
        // What it detects is what verifies.
        for pem in [RSA, EC] {
            assert!(JwtAuth::new(JwtKey::from_public_pem(pem.to_vec()).unwrap()).is_ok());
        }
    }
}
