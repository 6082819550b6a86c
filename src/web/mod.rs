//! HTTP surface besides webhooks: health and metrics ([`health`]), and the dashboard
//! with its JSON API and live logs ([`dashboard`], SPEC section 8).

pub mod dashboard;
pub mod health;
