//! HTTP surface besides webhooks: health and metrics now; the dashboard, its JSON API
//! and live logs (SPEC section 8) join here.

pub mod auth;
pub mod health;
