//! Secrets at rest (SPEC section 10): AES-256-GCM with the process's 32-byte key
//! (`REPOBOX_SECRET_KEY`, see [`crate::config::Config::secret_key`]).
//!
//! A sealed value is text, so it fits a Redis hash field: `v1.<nonce>.<ciphertext>`,
//! both parts base64url without padding (the alphabet has no `.`). Every seal draws a
//! fresh random 96-bit nonce, so sealing one value twice gives two different texts. The
//! caller names a *context* (e.g. `provider:<id>:token`) that is bound to the value as
//! associated data: a sealed value copied into another field, or another record, does
//! not open there. Errors never carry the value or the key.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;

use crate::secret::Secret;

/// The version tag of the current format.
const VERSION: &str = "v1";
/// AES-GCM's standard nonce: 96 bits.
const NONCE_LEN: usize = 12;
/// AES-GCM's authentication tag, appended to the ciphertext.
const TAG_LEN: usize = 16;

/// Why a sealed value did not open. The texts name no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not `v1.<nonce>.<ciphertext>` (truncated, not base64, wrong lengths).
    #[error("the sealed value is malformed")]
    Format,
    /// A version this build does not know.
    #[error("the sealed value has an unknown format version")]
    Version,
    /// Authentication failed: another key, another context, or the text was altered.
    #[error("the sealed value does not open with this key and context")]
    Open,
    /// Opened, but the plaintext is not UTF-8 (only possible with a forged key).
    #[error("the sealed value is not text")]
    NotText,
}

/// Seals and opens secrets with one AES-256-GCM key. `Debug` shows no key material.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(****)")
    }
}

impl SecretBox {
    /// A box over the 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    /// Encrypts `plaintext` bound to `context`, with a fresh random nonce.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            // AES-GCM refuses only messages over 64 GiB, which no &str here can be.
            .expect("AES-GCM encrypts any in-memory string");
        format!("{VERSION}.{}.{}", B64.encode(nonce), B64.encode(ciphertext))
    }

    /// Decrypts a value sealed with [`SecretBox::seal`] under the same key and context.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, CryptoError> {
        let mut parts = sealed.trim().split('.');
        let (Some(version), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Format);
        };
        if version != VERSION {
            return Err(if version.starts_with('v') {
                CryptoError::Version
            } else {
                CryptoError::Format
            });
        }
        let nonce = B64.decode(nonce).map_err(|_| CryptoError::Format)?;
        let ciphertext = B64.decode(ciphertext).map_err(|_| CryptoError::Format)?;
        if nonce.len() != NONCE_LEN || ciphertext.len() < TAG_LEN {
            return Err(CryptoError::Format);
        }
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| CryptoError::NotText)
    }

    /// Whether `text` has the shape of a sealed value (not whether it opens).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with("v1.") && text.matches('.').count() == 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "glpat-abcdefghij0123456789";

    fn boxed(byte: u8) -> SecretBox {
        SecretBox::new(&[byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_context() {
        let b = boxed(7);
        let sealed = b.seal(TOKEN, "provider:1:token");
        assert!(sealed.starts_with("v1."), "{sealed}");
        assert!(SecretBox::is_sealed(&sealed));
        assert!(!sealed.contains(TOKEN));
        assert_eq!(b.open(&sealed, "provider:1:token").unwrap().expose(), TOKEN);
        assert_eq!(b.open(&b.seal("", "c"), "c").unwrap().expose(), "");
        let unicode = "pässwörd ✓";
        assert_eq!(
            b.open(&b.seal(unicode, "c"), "c").unwrap().expose(),
            unicode
        );
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let b = boxed(7);
        let one = b.seal(TOKEN, "ctx");
        let two = b.seal(TOKEN, "ctx");
        assert_ne!(one, two);
        let nonce = |s: &str| s.split('.').nth(1).unwrap().to_owned();
        assert_ne!(nonce(&one), nonce(&two));
        assert_eq!(b.open(&two, "ctx").unwrap().expose(), TOKEN);
    }

    #[test]
    fn another_key_or_context_does_not_open() {
        let sealed = boxed(7).seal(TOKEN, "provider:1:token");
        assert_eq!(
            boxed(8).open(&sealed, "provider:1:token").unwrap_err(),
            CryptoError::Open
        );
        assert_eq!(
            boxed(7).open(&sealed, "provider:2:token").unwrap_err(),
            CryptoError::Open
        );
        assert_eq!(
            boxed(7).open(&sealed, "provider:1:label").unwrap_err(),
            CryptoError::Open
        );
    }

    #[test]
    fn tampering_is_detected() {
        let b = boxed(7);
        let sealed = b.seal(TOKEN, "ctx");
        let parts: Vec<&str> = sealed.split('.').collect();
        let mut bytes = B64.decode(parts[2]).unwrap();
        for i in [0, bytes.len() / 2, bytes.len() - 1] {
            bytes[i] ^= 1;
            let forged = format!("v1.{}.{}", parts[1], B64.encode(&bytes));
            assert_eq!(b.open(&forged, "ctx").unwrap_err(), CryptoError::Open);
            bytes[i] ^= 1;
        }
        let mut nonce = B64.decode(parts[1]).unwrap();
        nonce[0] ^= 1;
        let forged = format!("v1.{}.{}", B64.encode(&nonce), parts[2]);
        assert_eq!(b.open(&forged, "ctx").unwrap_err(), CryptoError::Open);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let b = boxed(7);
        let sealed = b.seal(TOKEN, "ctx");
        let parts: Vec<&str> = sealed.split('.').collect();
        let cases = [
            String::new(),
            TOKEN.to_owned(),
            "v1".into(),
            "v1..".into(),
            "v1.a.b".into(),
            "v1.!!!.@@@".into(),
            format!("v1.{}", parts[1]),
            format!("{sealed}.extra"),
            format!("v1.{}.{}", parts[1], B64.encode([0u8; 4])),
            format!("v1.{}.{}", B64.encode([0u8; 8]), parts[2]),
            "x1.AAAA.AAAA".into(),
            "v1.\u{e9}\u{e9}.\u{e9}".into(),
        ];
        for case in &cases {
            assert_eq!(
                b.open(case, "ctx").unwrap_err(),
                CryptoError::Format,
                "{case:?}"
            );
        }
        let v2 = sealed.replacen("v1.", "v2.", 1);
        assert_eq!(b.open(&v2, "ctx").unwrap_err(), CryptoError::Version);
    }

    #[test]
    fn errors_and_debug_show_no_value() {
        let b = boxed(7);
        let sealed = b.seal(TOKEN, "ctx");
        for e in [
            boxed(8).open(&sealed, "ctx").unwrap_err(),
            b.open(TOKEN, "ctx").unwrap_err(),
        ] {
            assert!(!e.to_string().contains("abcdefghij"), "{e}");
            assert!(!format!("{e:?}").contains("abcdefghij"), "{e:?}");
        }
        assert_eq!(format!("{b:?}"), "SecretBox(****)");
        let opened = b.open(&sealed, "ctx").unwrap();
        assert!(!format!("{opened:?}").contains("abcdefghij"));
    }
}
