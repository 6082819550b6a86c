//! Google sign-in over OpenID Connect: discovery from
//! `{issuer}/.well-known/openid-configuration` (with the issuer's JWKS), the
//! authorization-code flow with PKCE and a nonce, scopes `openid email profile`, and a
//! verified ID token (RS256 signature against the JWKS, `iss`, `aud`, `exp`, `nonce`).
//! The login is the e-mail, and only a verified one (`email_verified`) is accepted:
//! `REPOBOX_ADMINS` names Google admins by e-mail.

use std::time::{Duration, Instant};

use anyhow::Context;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};

use super::http::OAuthHttp;
use super::oauth::token_error;
use super::{AuthError, Identity, PendingLogin, ProviderKind};
use crate::config::Config;
use crate::secret::Secret;

/// How long a discovery document (and the signing keys fetched with it) is reused.
const METADATA_TTL: Duration = Duration::from_secs(3600);

const KIND: ProviderKind = ProviderKind::Google;

pub(super) struct OidcProvider {
    issuer: IssuerUrl,
    client_id: String,
    client_secret: Secret,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl OidcProvider {
    /// Google sign-in, when `REPOBOX_GOOGLE_CLIENT_ID`/`_SECRET` are set.
    pub(super) fn from_config(config: &Config) -> anyhow::Result<Option<OidcProvider>> {
        let Some((client_id, client_secret)) = super::pair(
            &config.google_client_id,
            "REPOBOX_GOOGLE_CLIENT_ID",
            &config.google_client_secret,
            "REPOBOX_GOOGLE_CLIENT_SECRET",
        )?
        else {
            return Ok(None);
        };
        url::Url::parse(&config.google_issuer_url)
            .context("REPOBOX_GOOGLE_ISSUER_URL is not a URL")?;
        let issuer = IssuerUrl::new(config.google_issuer_url.trim_end_matches('/').to_owned())
            .context("REPOBOX_GOOGLE_ISSUER_URL is not a URL")?;
        Ok(Some(OidcProvider {
            issuer,
            client_id,
            client_secret,
            metadata: tokio::sync::Mutex::new(None),
        }))
    }

    /// The issuer's discovery document and keys, fetched at most once per
    /// [`METADATA_TTL`].
    async fn metadata(&self, http: &OAuthHttp) -> Result<CoreProviderMetadata, AuthError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, metadata)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %KIND, error = %e, "OpenID Connect discovery failed");
                AuthError::Provider(format!("{KIND} discovery failed"))
            })?;
        *cached = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        AuthError,
    > {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| AuthError::Provider("the callback address is not a URL".into()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(self.client_secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    pub(super) async fn start(
        &self,
        http: &OAuthHttp,
        redirect_uri: &str,
    ) -> Result<(String, PendingLogin), AuthError> {
        let client = self.client(self.metadata(http).await?, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            PendingLogin {
                provider: KIND,
                state: state.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                nonce: Some(nonce.secret().clone()),
            },
        ))
    }

    pub(super) async fn finish(
        &self,
        http: &OAuthHttp,
        pending: PendingLogin,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Identity, AuthError> {
        let nonce = Nonce::new(pending.nonce.ok_or(AuthError::StateMismatch)?);
        let client = self.client(self.metadata(http).await?, redirect_uri)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| AuthError::Provider(format!("{KIND} has no token endpoint")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(http)
            .await
            .map_err(|e| token_error(KIND, e))?;
        let id_token = token
            .extra_fields()
            .id_token()
            .ok_or_else(|| AuthError::Provider(format!("{KIND} sent no ID token")))?;
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &nonce).map_err(claims_error)?;
        let email = claims
            .email()
            .map(|e| e.as_str().to_owned())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| AuthError::Denied(format!("{KIND} sent no e-mail address")))?;
        if claims.email_verified() != Some(true) {
            return Err(AuthError::Denied(format!(
                "the {KIND} account's e-mail address is not verified"
            )));
        }
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .filter(|n| !n.is_empty());
        Ok(Identity {
            provider: KIND,
            id: claims.subject().as_str().to_owned(),
            login: email.clone(),
            name,
            email: Some(email),
            access_token: None,
        })
    }
}

/// Why an ID token was refused, in fixed words (the library's texts quote claims).
fn claims_error(error: ClaimsVerificationError) -> AuthError {
    tracing::info!(provider = %KIND, error = %error, "ID token refused");
    let why = match error {
        ClaimsVerificationError::Expired(_) => "the ID token has expired",
        ClaimsVerificationError::InvalidAudience(_) => "the ID token is for another application",
        ClaimsVerificationError::InvalidIssuer(_) => "the ID token is from another issuer",
        ClaimsVerificationError::InvalidNonce(_) => "the ID token belongs to another sign-in",
        ClaimsVerificationError::SignatureVerification(_) => {
            "the ID token's signature does not verify"
        }
        _ => "the ID token is not valid",
    };
    AuthError::Denied(why.into())
}
