//! ES256 JSON Web Tokens: the storefront tokens, signed with one P-256 key per store.
//!
//! Invariant: pure; signing is deterministic (RFC 6979), key generation takes the caller's RNG.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::storefront::TokenKind;

/// The only header the emulator writes and accepts.
pub const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"ES256"}"#;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a well-formed ES256 JWT")]
    Malformed,
    #[error("the signature does not match the store's key")]
    BadSignature,
}

#[derive(Debug, Error)]
#[error("not a valid P-256 secret key")]
pub struct KeyError;

/// Claims of a storefront token. `exp` (and BigCommerce's `eat`) is the requested `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The store hash.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub eat: i64,
    pub jti: String,
    /// Channel ids.
    pub cid: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<String>,
    pub token_kind: TokenKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
}

/// A store's signing key.
#[derive(Clone)]
pub struct StoreKey {
    signing: SigningKey,
    verifying: VerifyingKey,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    pub fn generate(rng: &mut impl Rng) -> StoreKey {
        loop {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            if let Ok(signing) = SigningKey::from_slice(&bytes) {
                return StoreKey::from_signing(signing);
            }
        }
    }

    fn from_signing(signing: SigningKey) -> StoreKey {
        let verifying = *signing.verifying_key();
        StoreKey { signing, verifying }
    }

    /// The secret scalar as base64url, for the state file.
    pub fn to_secret_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.to_bytes())
    }

    pub fn from_secret_b64(s: &str) -> Result<StoreKey, KeyError> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| KeyError)?;
        let signing = SigningKey::from_slice(&bytes).map_err(|_| KeyError)?;
        Ok(StoreKey::from_signing(signing))
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signing_input = format!("{header}.{payload}");
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// Checks the header, the signature, and decodes the claims. Expiry is not checked here.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let (signing_input, claims, signature) = decode_unverified(token)?;
        self.verifying
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| JwtError::BadSignature)?;
        Ok(claims)
    }
}

/// Splits and decodes a token without checking its signature.
fn decode_unverified(token: &str) -> Result<(&str, Claims, Signature), JwtError> {
    let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    let header: Header = decode_json(header_b64)?;
    if header.alg != "ES256" {
        return Err(JwtError::Malformed);
    }
    let claims: Claims = decode_json(payload_b64)?;
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::Malformed)?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| JwtError::BadSignature)?;
    Ok((signing_input, claims, signature))
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn claims() -> Claims {
        Claims {
            iss: "BC".into(),
            sub: "abc123".into(),
            iat: 1,
            exp: 2,
            eat: 2,
            jti: "j1".into(),
            cid: vec![1],
            cors: vec![],
            token_kind: TokenKind::Storefront,
            scopes: vec![],
        }
    }

    #[test]
    fn sign_then_verify() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let key = StoreKey::generate(&mut rng);
        let token = key.sign(&claims());
        let header = token.split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            HEADER_JSON.as_bytes()
        );
        assert_eq!(key.verify(&token).unwrap(), claims());
        let again = StoreKey::from_secret_b64(&key.to_secret_b64()).unwrap();
        assert_eq!(again.verify(&token).unwrap(), claims());
    }

    #[test]
    fn rejections() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let key = StoreKey::generate(&mut rng);
        let other = StoreKey::generate(&mut rng);
        let token = key.sign(&claims());
        let (input, _) = token.rsplit_once('.').unwrap();
        let mut tampered_claims = claims();
        tampered_claims.exp = 99;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered_claims).unwrap());
        let forged = format!(
            "{}.{}.{}",
            input.split('.').next().unwrap(),
            forged_payload,
            token.rsplit('.').next().unwrap()
        );
        let cases = [
            ("garbage".to_string(), JwtError::Malformed),
            ("a.b.c".to_string(), JwtError::Malformed),
            (format!("{input}.AAAA"), JwtError::BadSignature),
            (other.sign(&claims()), JwtError::BadSignature),
            (forged, JwtError::BadSignature),
        ];
        for (t, expected) in cases {
            assert_eq!(key.verify(&t).unwrap_err(), expected, "{t}");
        }
    }
}
