//! Formats of generated credentials and how they are recognised.
//!
//! The real API documents no lengths; these are the observed or chosen ones (see README):
//! access tokens and client ids are 31 lowercase alphanumerics, client secrets 63, legacy and
//! user API tokens 40 lowercase hex digits, jti values 32 hex digits.
//! Invariant: pure; randomness comes from the caller's generator.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

pub const ACCESS_TOKEN_LEN: usize = 31;
pub const CLIENT_ID_LEN: usize = 31;
pub const CLIENT_SECRET_LEN: usize = 63;
pub const BASIC_TOKEN_LEN: usize = 40;

fn random_from(rng: &mut impl Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

pub fn access_token(rng: &mut impl Rng) -> String {
    random_from(rng, ALNUM, ACCESS_TOKEN_LEN)
}

pub fn client_id(rng: &mut impl Rng) -> String {
    random_from(rng, ALNUM, CLIENT_ID_LEN)
}

pub fn client_secret(rng: &mut impl Rng) -> String {
    random_from(rng, ALNUM, CLIENT_SECRET_LEN)
}

/// Legacy account and user API tokens.
pub fn basic_token(rng: &mut impl Rng) -> String {
    random_from(rng, HEX, BASIC_TOKEN_LEN)
}

pub fn jti(rng: &mut impl Rng) -> String {
    random_from(rng, HEX, 32)
}

/// An admin token when none is given.
pub fn admin_token(rng: &mut impl Rng) -> String {
    random_from(rng, ALNUM, 40)
}

pub fn is_access_token(s: &str) -> bool {
    s.len() == ACCESS_TOKEN_LEN && s.bytes().all(|b| ALNUM.contains(&b))
}

pub fn is_store_hash(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| ALNUM.contains(&b))
}

/// Lowercase hex of the SHA-256 of `s`: how tokens are listed and logged without their value.
pub fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
    out
}

/// A short fingerprint of a secret for log lines: the first 8 hex digits of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    sha256_hex(secret)[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_values_have_the_documented_shapes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert!(is_access_token(&access_token(&mut rng)));
        assert!(is_access_token(&client_id(&mut rng)));
        assert_eq!(client_secret(&mut rng).len(), CLIENT_SECRET_LEN);
        let t = basic_token(&mut rng);
        assert_eq!(t.len(), BASIC_TOKEN_LEN);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn recognisers() {
        let cases = [
            ("abc123", true),
            ("17hoqh4ddx", true),
            ("ABC", false),
            ("", false),
            ("a-b", false),
        ];
        for (s, ok) in cases {
            assert_eq!(is_store_hash(s), ok, "{s}");
        }
        assert!(!is_access_token("abc"));
        assert!(!is_access_token("ABCDEFGHIJKLMNOPQRSTUVWXYZ01234"));
    }

    #[test]
    fn sha256_of_empty_string() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(fingerprint(""), "e3b0c442");
    }
}
