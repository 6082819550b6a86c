//! `/settings` (a user's personal providers) and `/admin` (the admin settings).
//!
//! A personal provider is a GitHub or GitLab token (and a GitLab URL) the user adds for
//! repositories the App cannot reach. The token is sealed (AES-256-GCM, a fresh nonce,
//! bound to the provider's id) before it is stored, and is never shown again: the page
//! lists a masked form. Admin settings are validated all together and stored in the
//! `settings` hash, where intake and runners read them on their next use (no restart).
//! Setup secrets ([`crate::setup_secrets`]) are added and deleted on the admin page, sealed
//! and bound to their name; the page lists names only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tower_sessions::Session;

use super::session::{self, SessionUser};
use super::{Page, pages};
use crate::app::AppState;
use crate::model::ForgeKind;
use crate::secret::mask_token;
use crate::settings::AdminSettings;
use crate::store::{Provider, accounts};

#[derive(serde::Deserialize)]
pub struct ProviderForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    token: String,
}

pub(super) fn owner(user: &SessionUser) -> String {
    accounts::owner(&user.provider, &user.id)
}

/// A personal provider as it is shown (the settings page, `GET /api/v1/providers`):
/// the token masked, never whole.
#[derive(serde::Serialize)]
pub struct Listed {
    id: String,
    kind: ForgeKind,
    url: String,
    label: String,
    #[serde(rename = "token")]
    masked: String,
}

async fn listed(state: &AppState, user: &SessionUser) -> Result<Vec<Listed>, Page> {
    listed_providers(state, user)
        .await
        .map_err(super::unavailable)
}

/// The user's providers, oldest first, tokens masked (`glpat-****1234`).
pub async fn listed_providers(
    state: &AppState,
    user: &SessionUser,
) -> Result<Vec<Listed>, crate::store::StoreError> {
    let providers = state.store.list_providers(&owner(user)).await?;
    Ok(providers
        .into_iter()
        .map(|p| {
            let masked = state
                .secret_box
                .open(&p.token, &Provider::token_context(p.id))
                .map(|t| mask_token(t.expose()))
                .unwrap_or_else(|_| "(cannot be opened with this secret key)".into());
            Listed {
                id: p.id.to_string(),
                kind: p.kind,
                url: p.url,
                label: p.label,
                masked,
            }
        })
        .collect())
}

fn settings_page(
    user: &SessionUser,
    csrf: &str,
    providers: &[Listed],
    error: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "Settings" }
        div.card {
            h2 { "Your providers" }
            p.muted { "Tokens for repositories the Repobox App cannot reach. They are stored encrypted and never shown again." }
            @if providers.is_empty() {
                p.muted id="no-providers" { "None yet." }
            } @else {
                table id="providers" {
                    thead { tr { th { "Name" } th { "Forge" } th.hide-narrow { "URL" } th { "Token" } th {} } }
                    tbody {
                        @for p in providers {
                            tr {
                                td { (p.label) }
                                td { (p.kind.as_str()) }
                                td.hide-narrow.muted { (p.url) }
                                td { code { (p.masked) } }
                                td {
                                    form method="post" action=(format!("/settings/providers/{}/delete", p.id)) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.secondary type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.card {
            h2 { "Add a provider" }
            @if let Some(e) = error { p.error { (e) } }
            form id="add-provider" method="post" action="/settings/providers" {
                input type="hidden" name="csrf" value=(csrf);
                div.filters {
                    label { "Forge"
                        select name="kind" { option value="github" { "GitHub" } option value="gitlab" { "GitLab" } }
                    }
                    label { "URL" input name="url" placeholder="https://gitlab.example.com (GitLab; empty for github.com)"; }
                    label { "Name" input name="label" placeholder="work GitLab" required; }
                    label { "Token" input type="password" name="token" autocomplete="off" required; }
                    button type="submit" { "Add" }
                }
            }
        }
    };
    pages::layout("Settings", Some(user), csrf, body)
}

pub async fn page(State(state): State<AppState>, session: Session) -> Page {
    let (user, csrf) = match super::signed_in(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    match listed(&state, &user).await {
        Ok(list) => Page::Html(settings_page(&user, &csrf, &list, None)),
        Err(p) => p,
    }
}

/// Validates the form; the error is shown to the user.
fn check(form: &ProviderForm) -> Result<(ForgeKind, String), String> {
    let kind = match form.kind.as_str() {
        "github" => ForgeKind::GitHub,
        "gitlab" => ForgeKind::GitLab,
        _ => return Err("Choose GitHub or GitLab.".into()),
    };
    if form.label.trim().is_empty() || form.label.chars().count() > 100 {
        return Err("Give the provider a name (at most 100 characters).".into());
    }
    let token = form.token.trim();
    if token.len() < 8 || token.len() > 512 || token.chars().any(char::is_whitespace) {
        return Err("The token does not look like a token.".into());
    }
    let url = match (kind, form.url.trim()) {
        (ForgeKind::GitHub, "") => "https://api.github.com".to_owned(),
        (ForgeKind::GitLab, "") => return Err("A GitLab provider needs its URL.".into()),
        (_, url) => {
            let parsed = url::Url::parse(url).map_err(|_| "The URL is not a URL.".to_owned())?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err("The URL must start with https://.".into());
            }
            url.trim_end_matches('/').to_owned()
        }
    };
    Ok((kind, url))
}

pub async fn add(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<ProviderForm>,
) -> Page {
    let (user, csrf) = match super::posted(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let (kind, url) = match check(&form) {
        Ok(v) => v,
        Err(e) => {
            return match listed(&state, &user).await {
                Ok(list) => Page::Status(
                    StatusCode::BAD_REQUEST,
                    settings_page(&user, &csrf, &list, Some(&e)),
                ),
                Err(p) => p,
            };
        }
    };
    let id = ulid::Ulid::new();
    let provider = Provider {
        id,
        owner: owner(&user),
        kind,
        url,
        label: form.label.trim().to_owned(),
        token: state
            .secret_box
            .seal(form.token.trim(), &Provider::token_context(id)),
        created_at: time::OffsetDateTime::now_utc(),
    };
    match state.store.add_provider(&provider).await {
        Ok(()) => Page::Redirect("/settings".into()),
        Err(e) => super::unavailable(e),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Page {
    let (user, csrf) = match super::posted(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let Ok(id) = id.parse::<ulid::Ulid>() else {
        return Page::NotFound(pages::not_found(Some(&user), &csrf));
    };
    match state.store.delete_provider(&owner(&user), id).await {
        Ok(true) => Page::Redirect("/settings".into()),
        Ok(false) => Page::NotFound(pages::not_found(Some(&user), &csrf)),
        Err(e) => super::unavailable(e),
    }
}

fn admin_page(
    user: &SessionUser,
    csrf: &str,
    s: &AdminSettings,
    data: &AdminData,
    error: Option<&str>,
) -> Markup {
    let repos: Vec<String> = s.allowed_repos.iter().map(|p| p.to_string()).collect();
    let allow: Vec<String> = s.sandbox_allow.0.iter().map(|p| p.to_string()).collect();
    let body = html! {
        h1 { "Admin settings" }
        div.card {
            p.muted { "Intake and runners read these on their next use; no restart is needed. Empty fields keep the configured value." }
            @if let Some(e) = error { p.error { (e) } }
            form id="admin-settings" method="post" action="/admin" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Allowed repositories (one per line, e.g. github:acme/* — empty: all)"
                    textarea name="allowed_repos" rows="4" { (repos.join("\n")) }
                }
                label { "Models .repobox.yml may choose besides the model below (one per line — empty: any)"
                    textarea name="allowed_models" rows="3" { (s.allowed_models.join("\n")) }
                }
                label { "Sandbox network allowlist, added to REPOBOX_SANDBOX_ALLOW (one per line: host, *.domain, host:port or ip:port)"
                    textarea name="sandbox_allow" rows="4" { (allow.join("\n")) }
                }
                div.filters {
                    label { "Trigger" input name="trigger" value=(s.trigger); }
                    label { "Label" input name="label" value=(s.label); }
                    label { "Model" input name="model" value=(s.model); }
                    label { "Jobs per user" input name="per_user_limit" value=(s.per_user_limit); }
                    label { "Max turns" input name="max_turns" value=(s.max_turns); }
                    label { "Monthly cap per requester, USD (empty: none)" input name="monthly_cap_requester" value=(fields_value(s, "monthly_cap_requester")); }
                    label { "Monthly cap per repository, USD (empty: none)" input name="monthly_cap_repo" value=(fields_value(s, "monthly_cap_repo")); }
                    label { "Workflow changes"
                        select name="allow_workflow_changes" {
                            option value="false" selected[!s.allow_workflow_changes] { "refused" }
                            option value="true" selected[s.allow_workflow_changes] { "allowed" }
                        }
                    }
                    label { "Pull requests from forks"
                        select name="allow_forks" {
                            option value="false" selected[!s.allow_forks] { "refused" }
                            option value="true" selected[s.allow_forks] { "allowed" }
                        }
                    }
                    label { "Confidential GitLab notes and issues"
                        select name="allow_confidential" {
                            option value="false" selected[!s.allow_confidential] { "ignored" }
                            option value="true" selected[s.allow_confidential] { "processed" }
                        }
                    }
                }
                p { button type="submit" { "Save" } }
            }
        }
        div.card {
            h2 { "Setup secrets" }
            p.muted { "Given to a repository's setup commands when its .repobox.yml names them in setup_env; never to the agent, masked in job logs. Values are stored sealed and never shown again." }
            @if data.secrets.is_empty() {
                p { "No setup secrets yet." }
            } @else {
                table {
                    @for name in &data.secrets {
                        tr {
                            td { code { (name) } }
                            td {
                                form method="post" action="/admin/secrets/delete" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="name" value=(name);
                                    button type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            form id="setup-secret" method="post" action="/admin/secrets" {
                input type="hidden" name="csrf" value=(csrf);
                div.filters {
                    label { "Name (e.g. NPM_TOKEN)" input name="name" autocomplete="off"; }
                    label { "Value" input type="password" name="value" autocomplete="off"; }
                }
                p { button type="submit" { "Save secret" } }
            }
        }
        div.card {
            h2 { "Spend in " (data.usage.month) " (UTC)" }
            @if data.usage.requesters.is_empty() {
                p { "Nothing billed this month." }
            } @else {
                table {
                    tr { th { "Requester" } th { "USD" } }
                    @for s in &data.usage.requesters {
                        tr {
                            td { @if let Some(login) = &s.login { "@" (login) " " } span.muted { (s.key) } }
                            td { (format!("{:.2}", s.usd)) }
                        }
                    }
                }
                table {
                    tr { th { "Repository" } th { "USD" } }
                    @for s in &data.usage.repositories {
                        tr { td { (s.key) } td { (format!("{:.2}", s.usd)) } }
                    }
                }
            }
        }
    };
    pages::layout("Admin", Some(user), csrf, body)
}

async fn admin_user(state: &AppState, session: &Session) -> Result<(SessionUser, String), Page> {
    let (user, csrf) = super::signed_in(state, session).await?;
    if !user.admin {
        return Err(Page::NotFound(pages::not_found(Some(&user), &csrf)));
    }
    Ok((user, csrf))
}

pub async fn admin(State(state): State<AppState>, session: Session) -> Page {
    let (user, csrf) = match admin_user(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    match state.settings.load().await {
        Ok(s) => Page::Html(admin_page(
            &user,
            &csrf,
            &s,
            &admin_data(&state).await,
            None,
        )),
        Err(e) => super::unavailable(e),
    }
}

pub async fn save_admin(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> Page {
    let (user, csrf) = match admin_user(&state, &session).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    if !session::check_csrf(&session, form.get("csrf").map(String::as_str).unwrap_or("")).await {
        return super::csrf_refused();
    }
    let mut updates: Vec<(&str, String)> = Vec::new();
    for name in crate::settings::FIELDS {
        if let Some(value) = form.get(name) {
            // Lists and caps may be emptied (every repository, no cap).
            let list = matches!(
                name,
                "allowed_repos"
                    | "sandbox_allow"
                    | "allowed_models"
                    | "monthly_cap_requester"
                    | "monthly_cap_repo"
            );
            let value = if list {
                value.split_whitespace().collect::<Vec<_>>().join(",")
            } else {
                value.trim().to_owned()
            };
            if !value.is_empty() || list {
                updates.push((name, value));
            }
        }
    }
    match state.settings.save(&updates).await {
        Ok(()) => Page::Redirect("/admin".into()),
        Err(crate::settings::SaveError::Invalid(e)) => {
            let current = state.settings.current().await;
            Page::Status(
                StatusCode::BAD_REQUEST,
                admin_page(
                    &user,
                    &csrf,
                    &current,
                    &admin_data(&state).await,
                    Some(&e.to_string()),
                ),
            )
        }
        Err(e) => super::unavailable(e),
    }
}

/// A setting's stored text (as the form shows it).
fn fields_value(s: &AdminSettings, name: &str) -> String {
    s.to_fields()
        .into_iter()
        .find(|(field, _)| *field == name)
        .map(|(_, value)| value)
        .unwrap_or_default()
}

/// What the admin page shows besides the settings.
struct AdminData {
    /// The stored setup secrets' names, sorted (values are never read here).
    secrets: Vec<String>,
    /// This month's spend.
    usage: crate::store::usage::MonthUsage,
}

async fn admin_data(state: &AppState) -> AdminData {
    let mut secrets: Vec<String> = state
        .store
        .setup_secrets()
        .await
        .map(|m| m.into_keys().collect())
        .unwrap_or_default();
    secrets.sort();
    let month = crate::store::usage::month(time::OffsetDateTime::now_utc());
    let usage = state
        .store
        .usage(&month)
        .await
        .map(|hash| crate::store::usage::MonthUsage::from_hash(&month, &hash))
        .unwrap_or_default();
    AdminData { secrets, usage }
}

#[derive(serde::Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

/// An admin's form post ([`super::posted`]), or the page that refuses it: 403 without
/// the CSRF token, 404 for anyone but an admin.
async fn admin_post(
    state: &AppState,
    session: &Session,
    token: &str,
) -> Result<(SessionUser, String), Page> {
    let (user, csrf) = super::posted(state, session, token).await?;
    if !user.admin {
        return Err(Page::NotFound(pages::not_found(Some(&user), &csrf)));
    }
    Ok((user, csrf))
}

/// `POST /admin/secrets`: stores (or replaces) a setup secret, sealed and bound to its
/// name.
pub async fn save_secret(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<SecretForm>,
) -> Page {
    let (user, csrf) = match admin_post(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    let name = form.name.trim();
    let value = form.value.trim_end_matches(['\r', '\n']);
    let problem = crate::setup_secrets::check_name(name).err().or_else(|| {
        if value.is_empty() {
            Some("a setup secret needs a value".to_owned())
        } else if value.len() > crate::setup_secrets::MAX_VALUE {
            Some(format!(
                "a setup secret is at most {} bytes",
                crate::setup_secrets::MAX_VALUE
            ))
        } else {
            None
        }
    });
    if let Some(problem) = problem {
        let current = state.settings.current().await;
        let data = admin_data(&state).await;
        return Page::Status(
            StatusCode::BAD_REQUEST,
            admin_page(&user, &csrf, &current, &data, Some(&problem)),
        );
    }
    let sealed = state
        .secret_box
        .seal(value, &crate::setup_secrets::context(name));
    match state.store.set_setup_secret(name, &sealed).await {
        Ok(()) => Page::Redirect("/admin".into()),
        Err(e) => super::unavailable(e),
    }
}

/// `POST /admin/secrets/delete`: removes a setup secret.
pub async fn delete_secret(
    State(state): State<AppState>,
    session: Session,
    axum::Form(form): axum::Form<SecretForm>,
) -> Page {
    let (user, csrf) = match admin_post(&state, &session, &form.csrf).await {
        Ok(u) => u,
        Err(p) => return p,
    };
    match state.store.delete_setup_secret(form.name.trim()).await {
        Ok(true) => Page::Redirect("/admin".into()),
        Ok(false) => Page::NotFound(pages::not_found(Some(&user), &csrf)),
        Err(e) => super::unavailable(e),
    }
}
