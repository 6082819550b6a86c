//! What fetch and push share on the wire: the credential callback (the only way a
//! token reaches libgit2), and the mapping of libgit2 errors to `GitError` with every
//! secret masked.

use std::cell::Cell;
use std::rc::Rc;

use git2::{Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};

use super::{Credentials, GitError};
use crate::secret::{Secret, redact};

/// How many times libgit2 may ask for credentials in one operation before we give up;
/// a wrong token would otherwise be retried forever.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 2;

/// Counts credential requests, so a failure after the last attempt reads as `Auth`.
#[derive(Clone, Default)]
pub(super) struct AuthAttempts(Rc<Cell<u32>>);

impl AuthAttempts {
    fn exhausted(&self) -> bool {
        self.0.get() > MAX_CREDENTIAL_ATTEMPTS
    }
}

/// Callbacks that answer credential requests with `creds`, at most
/// `MAX_CREDENTIAL_ATTEMPTS` times.
pub(super) fn callbacks<'a>(
    creds: &'a Credentials,
    attempts: &AuthAttempts,
) -> RemoteCallbacks<'a> {
    let counter = attempts.clone();
    let mut cbs = RemoteCallbacks::new();
    cbs.credentials(move |_url, _username, allowed| {
        counter.0.set(counter.0.get() + 1);
        if counter.exhausted() {
            return Err(auth_error("the remote rejected the credentials"));
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(auth_error(
                "the remote asks for a credential type other than a token",
            ));
        }
        Cred::userpass_plaintext(&creds.username, creds.password.expose())
    });
    cbs
}

fn auth_error(msg: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Http, msg)
}

/// Maps a libgit2 error from a network operation, masking the token and any URL
/// credentials libgit2 might echo.
pub(super) fn map_remote_error(
    what: &str,
    err: &git2::Error,
    secret: &Secret,
    attempts: &AuthAttempts,
) -> GitError {
    let text = clean(err.message(), secret);
    let is_auth = attempts.exhausted()
        || err.code() == ErrorCode::Auth
        || text.contains("status code: 401")
        || text.contains("status code: 403");
    if is_auth {
        GitError::Auth(format!("{what}: {text}"))
    } else {
        GitError::Other(format!("{what}: {text}"))
    }
}

/// A message without the token and without `user:password@` in any URL.
pub(super) fn clean(text: &str, secret: &Secret) -> String {
    strip_url_userinfo(&redact(text, &[secret]))
}

/// Removes `user:pass@` from `scheme://user:pass@host` occurrences.
pub(super) fn strip_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_urls() {
        assert_eq!(
            strip_url_userinfo("failed to fetch 'https://x:ghs_abc@github.com/o/r.git' now"),
            "failed to fetch 'https://github.com/o/r.git' now"
        );
        assert_eq!(strip_url_userinfo("no url here"), "no url here");
        assert_eq!(
            strip_url_userinfo("http://127.0.0.1:80/a and https://u@h"),
            "http://127.0.0.1:80/a and https://h"
        );
    }

    #[test]
    fn clean_masks_the_token_anywhere() {
        let s = Secret::new("ghs_0123456789abcdefXYZW");
        let text = clean("bad token ghs_0123456789abcdefXYZW in body", &s);
        assert!(!text.contains("0123456789"), "{text}");
        assert!(text.contains("ghs_****XYZW"));
    }

    #[test]
    fn exhausted_attempts_read_as_auth() {
        let attempts = AuthAttempts::default();
        attempts.0.set(MAX_CREDENTIAL_ATTEMPTS + 1);
        let err = git2::Error::from_str("some transport failure");
        let s = Secret::new("t");
        assert!(matches!(
            map_remote_error("fetch", &err, &s, &attempts),
            GitError::Auth(_)
        ));
        let fresh = AuthAttempts::default();
        assert!(matches!(
            map_remote_error("fetch", &err, &s, &fresh),
            GitError::Other(_)
        ));
    }
}
