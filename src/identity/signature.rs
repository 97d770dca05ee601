//! Signature checks with keys made ready once per key set: public keys parsed into aws-lc
//! `EVP_PKEY`s and HMAC keys scheduled when the set is built, so that verifying a token costs the
//! signature check alone (jsonwebtoken's `crypto::verify` clones and re-parses the key, and boxes a
//! verifier, on every call), and the signature is decoded on the stack.

use aws_lc_rs::{
    hmac,
    signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// Every algorithm.
const ALL_ALGS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Largest decoded signature accepted: RSA-8192 (the largest modulus aws-lc verifies for JWS).
const MAX_SIGNATURE: usize = 1024;

/// One verification key made ready for every algorithm it may verify.
pub(crate) struct PreparedKey {
    /// One entry per algorithm the key may verify (up to six for an RSA key).
    by_alg: Box<[(Algorithm, Prepared)]>,
}

enum Prepared {
    Public(ParsedPublicKey),
    // Boxed: an HMAC key schedule is several times the size of a parsed public key.
    Hmac(Box<hmac::Key>),
}

// Names the algorithms only: an HMAC key is a secret.
impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_alg.iter().map(|(a, _)| a)).finish()
    }
}

fn public_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(alg) {
        return Some(rsa);
    }
    match alg {
        Algorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Some(&signature::ED25519),
        _ => None,
    }
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static signature::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

impl PreparedKey {
    /// Prepares `key` for each algorithm `verifies` accepts; an error when the key material does
    /// not parse for one of them (the key is unusable, and refused where the set is built).
    pub(crate) fn new(key: &DecodingKey, verifies: impl Fn(Algorithm) -> bool) -> Result<Self, String> {
        let refused = |alg: Algorithm| format!("the key does not parse as a {alg:?} key");
        let mut by_alg = Vec::new();
        for alg in ALL_ALGS.into_iter().filter(|a| verifies(*a)) {
            let prepared = match (key.kind(), alg.family()) {
                // A public key is never an HMAC secret (the RS256 → HS256 confusion).
                (DecodingKeyKind::SecretOrDer(secret), AlgorithmFamily::Hmac)
                    if key.family() == AlgorithmFamily::Hmac =>
                {
                    let h = match alg {
                        Algorithm::HS256 => hmac::HMAC_SHA256,
                        Algorithm::HS384 => hmac::HMAC_SHA384,
                        _ => hmac::HMAC_SHA512,
                    };
                    Prepared::Hmac(Box::new(hmac::Key::new(h, secret)))
                }
                (DecodingKeyKind::RsaModulusExponent { n, e }, AlgorithmFamily::Rsa) => {
                    let params = rsa_parameters(alg).ok_or_else(|| refused(alg))?;
                    let parsed = RsaPublicKeyComponents { n, e }.to_parsed_public_key(params);
                    Prepared::Public(parsed.map_err(|_| refused(alg))?)
                }
                (DecodingKeyKind::SecretOrDer(bytes), family) if family == key.family() => {
                    let verification = public_algorithm(alg).ok_or_else(|| refused(alg))?;
                    Prepared::Public(ParsedPublicKey::new(verification, bytes).map_err(|_| refused(alg))?)
                }
                _ => return Err(refused(alg)),
            };
            by_alg.push((alg, prepared));
        }
        Ok(PreparedKey { by_alg: by_alg.into_boxed_slice() })
    }

    /// True when `signature` (base64url) is `alg`'s valid signature of `message` under this key.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        let Some((_, prepared)) = self.by_alg.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        let mut buf = [0u8; MAX_SIGNATURE + 3];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(signature, &mut buf) else {
            return false;
        };
        let signature = &buf[..len];
        match prepared {
            Prepared::Public(key) => key.verify_sig(message, signature).is_ok(),
            Prepared::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
    };

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn verifies_with_the_prepared_key_only_for_its_algorithms() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let key =
            PreparedKey::new(&DecodingKey::from_ec_der(pair.public_key().as_ref()), |a| a == Algorithm::ES256).unwrap();
        let sig = b64(pair.sign(&rng, b"a.b").unwrap().as_ref());
        assert!(key.verify(Algorithm::ES256, b"a.b", &sig));
        assert!(!key.verify(Algorithm::ES256, b"a.c", &sig));
        // Not prepared for ES384, and never an HMAC secret.
        assert!(!key.verify(Algorithm::ES384, b"a.b", &sig));
        assert!(!key.verify(Algorithm::HS256, b"a.b", &sig));
        // Padding, bad base64 and oversized signatures are refused, not panics.
        assert!(!key.verify(Algorithm::ES256, b"a.b", &format!("{sig}=")));
        assert!(!key.verify(Algorithm::ES256, b"a.b", "!!"));
        assert!(!key.verify(Algorithm::ES256, b"a.b", &"A".repeat(4096)));
    }

    #[test]
    fn a_public_key_is_never_prepared_as_an_hmac_secret() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let public = DecodingKey::from_ec_der(pair.public_key().as_ref());
        assert!(PreparedKey::new(&public, |a| a == Algorithm::HS256).is_err());
        // A point that is not on the curve is refused when the set is built.
        let mut bad = pair.public_key().as_ref().to_vec();
        bad[10] ^= 1;
        assert!(PreparedKey::new(&DecodingKey::from_ec_der(&bad), |a| a == Algorithm::ES256).is_err());
    }

    #[test]
    fn hmac_keys_verify_and_debug_shows_no_secret() {
        let secret = [7u8; 32];
        let key =
            PreparedKey::new(&DecodingKey::from_secret(&secret), |a| a.family() == AlgorithmFamily::Hmac).unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, &secret), b"h.p");
        assert!(key.verify(Algorithm::HS384, b"h.p", &b64(tag.as_ref())));
        assert!(!key.verify(Algorithm::HS256, b"h.p", &b64(tag.as_ref())));
        assert_eq!(format!("{key:?}"), "[HS256, HS384, HS512]");
    }
}
