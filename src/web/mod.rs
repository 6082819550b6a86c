//! HTTP surface besides webhooks: health and metrics ([`health`]), the dashboard with
//! its JSON API and live logs ([`dashboard`], SPEC section 8), and the sign-in providers
//! the dashboard uses ([`auth`]), and the security headers on all of it ([`headers`]).

pub mod auth;
pub mod dashboard;
pub mod headers;
pub mod health;
