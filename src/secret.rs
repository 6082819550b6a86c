//! Secrets in memory: a string type whose `Debug` and `Display` never show the value,
//! and the masking used wherever a token could reach a log line, error or comment.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// A secret value (token, key, webhook secret). Printing it shows a masked form only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value, for the one place that must send it (an HTTP header, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with untrusted input.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_token(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_token(&self.0))
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Masks a token as `ghp_****abcd`: a known prefix (up to the last `_` or `-` in the
/// first eight characters) and the last four characters. Short values are fully masked.
pub fn mask_token(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 12 {
        return "****".to_owned();
    }
    let head: String = chars.iter().take(8).collect();
    let prefix_len = head.rfind(['_', '-']).map(|i| i + 1).unwrap_or(0);
    let prefix: String = chars[..prefix_len].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}****{tail}")
}

/// Replaces every occurrence of each secret in `text` with its masked form. Used on
/// error texts from forges and subprocesses before they are logged or posted.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if secret.0.len() >= 4 {
            out = out.replace(&secret.0, &mask_token(&secret.0));
        }
    }
    out
}

/// Everything that could be a secret in `text` masked: the given secrets wherever they
/// appear, and anything shaped like a known token ([`mask_known_tokens`]).
pub fn mask_all(text: &str, secrets: &[Secret]) -> String {
    let refs: Vec<&Secret> = secrets.iter().collect();
    mask_known_tokens(&redact(text, &refs))
}

/// Prefixes of well-known token formats (GitHub, GitLab, Anthropic).
const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "ghs_",
    "gho_",
    "ghu_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "gldt-",
    "sk-ant-",
];

/// Masks anything that looks like a forge or API token, even one Repobox was never told
/// about (e.g. a token an agent command printed). Applied to agent output and errors.
pub fn mask_known_tokens(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = TOKEN_PREFIXES
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, *p)))
        .min_by_key(|(i, _)| *i)
    {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_token_char(c));
        let len = rest[at..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(rest.len() - at);
        out.push_str(&rest[..at]);
        let candidate = &rest[at..at + len];
        if starts_word && len >= prefix.len() + 8 {
            out.push_str(&mask_token(candidate));
        } else {
            out.push_str(candidate);
        }
        rest = &rest[at + len.max(1)..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_token_shapes_are_masked_anywhere() {
        let text = "token=ghs_16C7e42F292c6912E7710c838347Ae178B4a and glpat-abcdefghij0123 \
                    but not myghp_short or sk-ant-x";
        let out = mask_known_tokens(text);
        assert!(!out.contains("16C7e42F"), "{out}");
        assert!(out.contains("ghs_****8B4a"), "{out}");
        assert!(out.contains("glpat-****0123"), "{out}");
        assert!(out.contains("sk-ant-x"), "{out}");
        assert_eq!(mask_known_tokens("plain text"), "plain text");
    }

    #[test]
    fn masks_keep_prefix_and_last_four() {
        assert_eq!(mask_token("ghp_abcdefghijklmnop1234"), "ghp_****1234");
        assert_eq!(mask_token("glpat-abcdefghijklmnopqrst"), "glpat-****qrst");
        assert_eq!(mask_token("sk-ant-api03-abcdefghijkl"), "sk-ant-****ijkl");
        assert_eq!(mask_token("plainsecretvalue"), "****alue");
        assert_eq!(mask_token("short"), "****");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("ghs_16C7e42F292c6912E7710c838347Ae178B4a");
        assert!(!format!("{s:?}").contains("16C7e42F"));
        assert!(!format!("{s}").contains("16C7e42F"));
        assert!(format!("{s:?}").ends_with("B4a") || format!("{s:?}").ends_with("8B4a"));
    }

    #[test]
    fn redact_replaces_every_occurrence() {
        let s = Secret::new("ghs_supersecretvalue9999");
        let text = "fatal: https://x-access-token:ghs_supersecretvalue9999@github.com twice ghs_supersecretvalue9999";
        let out = redact(text, &[&s]);
        assert!(!out.contains("supersecret"));
        assert_eq!(out.matches("ghs_****9999").count(), 2);
    }

    #[test]
    fn constant_time_match() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
    }
}
