//! Security headers (SPEC §14), one layer over every dashboard page and API answer:
//!
//! - `Content-Security-Policy`: scripts, styles and connections from this origin only —
//!   no inline script (the dashboard's JavaScript is the external `/assets/live.js`), no
//!   framing (`frame-ancestors 'none'`), forms post here or to GitHub (the App manifest
//!   form of `/setup`);
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`;
//! - `Cache-Control: no-store` on everything that does not set its own caching (the
//!   pages show jobs, logs, webhook secrets and tokens; only the static assets are
//!   cacheable), so no shared or back-button cache keeps them.

use axum::Router;
use axum::http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy for a dashboard whose setup form posts to `github_web_url`.
pub fn content_security_policy(github_web_url: &str) -> String {
    let github = github_web_url.trim_end_matches('/');
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self' {github}; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

/// `router` with the security headers on every response.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    github_web_url: &str,
) -> Router<S> {
    let csp = HeaderValue::from_str(&content_security_policy(github_web_url))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_script_nor_framing() {
        let csp = content_security_policy("https://github.example/");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            csp.contains("form-action 'self' https://github.example;"),
            "{csp}"
        );
    }
}
