//! Webhook authenticity: GitHub's `X-Hub-Signature-256` HMAC and GitLab's
//! `X-Gitlab-Token`, both compared in constant time, each against every configured
//! secret so a secret can be rotated (`REPOBOX_*_WEBHOOK_SECRET=new,old`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// Splits a comma list of secrets; empty entries are dropped.
pub fn secret_list(value: &Secret) -> Vec<Secret> {
    value
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of the raw body under any secret.
pub fn github_signature_valid(secrets: &[Secret], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).is_ok()
    })
}

/// Checks the `X-Gitlab-Token` header against any secret, in constant time.
pub fn gitlab_token_valid(secrets: &[Secret], header: Option<&str>) -> bool {
    let Some(token) = header else {
        return false;
    };
    secrets.iter().any(|s| s.matches(token.as_bytes()))
}

/// The `X-Hub-Signature-256` value for a body (for tests, benchmarks and tools).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_accepts_old_and_new_secret() {
        let secrets = secret_list(&Secret::new("new-secret, old-secret,"));
        assert_eq!(secrets.len(), 2);
        let body = b"{}";
        assert!(github_signature_valid(
            &secrets,
            body,
            Some(&github_signature("old-secret", body))
        ));
        assert!(github_signature_valid(
            &secrets,
            body,
            Some(&github_signature("new-secret", body))
        ));
        assert!(!github_signature_valid(
            &secrets,
            body,
            Some(&github_signature("other", body))
        ));
    }

    #[test]
    fn malformed_signature_headers_fail() {
        let secrets = secret_list(&Secret::new("s"));
        for header in [
            None,
            Some(""),
            Some("sha1=abcd"),
            Some("sha256=zz"),
            Some("sha256="),
        ] {
            assert!(
                !github_signature_valid(&secrets, b"x", header),
                "{header:?}"
            );
        }
    }

    #[test]
    fn no_secret_means_nothing_verifies() {
        let body = b"{}";
        assert!(!github_signature_valid(
            &[],
            body,
            Some(&github_signature("", body))
        ));
        assert!(!gitlab_token_valid(&[], Some("")));
    }

    #[test]
    fn gitlab_token_must_match_exactly() {
        let secrets = secret_list(&Secret::new("tok1,tok2"));
        assert!(gitlab_token_valid(&secrets, Some("tok2")));
        assert!(!gitlab_token_valid(&secrets, Some("tok")));
        assert!(!gitlab_token_valid(&secrets, None));
    }
}
