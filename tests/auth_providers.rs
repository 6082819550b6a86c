//! Dashboard sign-in providers against HTTP fakes of GitHub, GitLab and an OpenID Connect
//! issuer (`common::oauth_fake`) and a real `slapd` (`common::slapd`).

mod common;

use clap::Parser;
use common::oauth_fake::{CLIENT_ID, CLIENT_SECRET, Flavor, IdTokenTweak, OAuthFake};
use common::slapd::{ALICE_PASSWORD, CAROL_PASSWORD, Slapd, USER_DN_TEMPLATE};
use repobox::cli::Cli;
use repobox::web::auth::{AuthError, Authenticator, Identity, PendingLogin, ProviderKind};

const REDIRECT: &str = "https://repobox.example.com/auth/callback";

fn authenticator(args: &[&str]) -> Authenticator {
    let mut all = vec!["repobox"];
    all.extend_from_slice(args);
    all.push("serve");
    let cli = Cli::try_parse_from(all).expect("test configuration parses");
    Authenticator::from_config(&cli.config, reqwest::Client::new()).expect("authenticator")
}

fn github(fake: &OAuthFake) -> Authenticator {
    authenticator(&[
        "--github-client-id",
        CLIENT_ID,
        "--github-client-secret",
        CLIENT_SECRET,
        "--github-api-url",
        &fake.url,
        "--github-web-url",
        &fake.url,
        "--admins",
        "github:OctoCat,gitlab:root,google:alice@example.org,ldap:alice",
    ])
}

fn gitlab(fake: &OAuthFake) -> Authenticator {
    authenticator(&[
        "--gitlab-url",
        &fake.url,
        "--gitlab-client-id",
        CLIENT_ID,
        "--gitlab-client-secret",
        CLIENT_SECRET,
        "--admins",
        "gitlab:ROOT",
    ])
}

fn google(fake: &OAuthFake) -> Authenticator {
    authenticator(&[
        "--google-client-id",
        CLIENT_ID,
        "--google-client-secret",
        CLIENT_SECRET,
        "--google-issuer-url",
        &fake.url,
        "--admins",
        "google:alice@example.org",
    ])
}

fn ldap(slapd: &Slapd) -> Authenticator {
    authenticator(&[
        "--ldap-url",
        &slapd.url,
        "--ldap-user-dn",
        USER_DN_TEMPLATE,
        "--admins",
        "ldap:alice",
    ])
}

/// A pending login whose PKCE verifier is replaced (what a session mix-up or an attacker
/// replaying a stolen code would hold).
fn with_verifier(pending: &PendingLogin, verifier: &str) -> PendingLogin {
    let mut json = serde_json::to_value(pending).unwrap();
    json["pkce_verifier"] = verifier.into();
    serde_json::from_value(json).unwrap()
}

/// Runs a whole redirect flow against the fake.
async fn sign_in(
    auth: &Authenticator,
    fake: &OAuthFake,
    provider: ProviderKind,
) -> Result<Identity, AuthError> {
    let (url, pending) = auth.start(provider, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;
    auth.finish(provider, pending, &code, &state, REDIRECT)
        .await
}

#[tokio::test]
async fn github_sign_in_with_pkce() {
    common::capture_logs();
    let fake = OAuthFake::start(Flavor::GitHub).await;
    let auth = github(&fake);
    assert_eq!(auth.providers(), vec![ProviderKind::GitHub]);

    let (url, pending) = auth.start(ProviderKind::GitHub, REDIRECT).await.unwrap();
    assert!(url.starts_with(&format!("{}/login/oauth/authorize?", fake.url)));
    let (code, state) = fake.authorize(&url).await;
    let sent = fake.last_authorize();
    assert_eq!(sent["client_id"], CLIENT_ID);
    assert_eq!(sent["redirect_uri"], REDIRECT);
    assert_eq!(sent["code_challenge_method"], "S256");
    assert!(!sent.contains_key("client_secret"));

    let identity = auth
        .finish(
            ProviderKind::GitHub,
            pending.clone(),
            &code,
            &state,
            REDIRECT,
        )
        .await
        .unwrap();
    assert_eq!(identity.provider, ProviderKind::GitHub);
    assert_eq!(identity.id, "583231");
    assert_eq!(identity.login, "octocat");
    assert_eq!(identity.name.as_deref(), Some("The Octocat"));
    assert_eq!(identity.email.as_deref(), Some("octocat@github.com"));
    let token = identity.access_token.clone().expect("an access token");
    assert!(token.expose().starts_with("fake_"));
    assert!(!format!("{identity:?}").contains(token.expose()));
    assert!(auth.is_admin(&identity), "github:OctoCat matches octocat");
    assert_eq!(fake.token_requests(), 1);

    // The code is single-use: replaying the callback is refused by the provider.
    let again = auth
        .finish(ProviderKind::GitHub, pending, &code, &state, REDIRECT)
        .await
        .unwrap_err();
    assert!(matches!(again, AuthError::Denied(_)), "{again:?}");
    assert!(!again.to_string().contains(&code));

    let logs = common::captured_logs();
    assert!(!logs.contains(token.expose()));
    assert!(!logs.contains(CLIENT_SECRET));
}

#[tokio::test]
async fn a_wrong_state_is_refused_before_any_token_request() {
    let fake = OAuthFake::start(Flavor::GitHub).await;
    let auth = github(&fake);
    let (url, pending) = auth.start(ProviderKind::GitHub, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;

    let forged = format!("{state}x");
    let err = auth
        .finish(
            ProviderKind::GitHub,
            pending.clone(),
            &code,
            &forged,
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::StateMismatch);
    let err = auth
        .finish(ProviderKind::GitHub, pending.clone(), &code, "", REDIRECT)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::StateMismatch);
    // A pending login of one provider does not finish another's callback.
    let err = auth
        .finish(ProviderKind::GitLab, pending, &code, &state, REDIRECT)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::StateMismatch);
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused_by_github() {
    let fake = OAuthFake::start(Flavor::GitHub).await;
    let auth = github(&fake);
    let (url, pending) = auth.start(ProviderKind::GitHub, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;
    let pending = with_verifier(&pending, &"v".repeat(43));
    let err = auth
        .finish(ProviderKind::GitHub, pending, &code, &state, REDIRECT)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Denied(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "sign-in refused: github refused the sign-in (invalid_grant)"
    );
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn gitlab_sign_in_with_pkce_and_a_wrong_verifier() {
    let fake = OAuthFake::start(Flavor::GitLab).await;
    let auth = gitlab(&fake);
    assert_eq!(auth.providers(), vec![ProviderKind::GitLab]);

    let identity = sign_in(&auth, &fake, ProviderKind::GitLab).await.unwrap();
    let sent = fake.last_authorize();
    assert_eq!(sent["scope"], "read_user read_api");
    assert_eq!(sent["code_challenge_method"], "S256");
    assert_eq!(identity.provider, ProviderKind::GitLab);
    assert_eq!(identity.id, "1");
    assert_eq!(identity.login, "root");
    assert_eq!(identity.email.as_deref(), Some("admin@example.com"));
    assert!(identity.access_token.is_some());
    assert!(auth.is_admin(&identity));

    let (url, pending) = auth.start(ProviderKind::GitLab, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;
    let err = auth
        .finish(
            ProviderKind::GitLab,
            with_verifier(&pending, &"w".repeat(64)),
            &code,
            &state,
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::Denied("gitlab refused the sign-in (invalid_grant)".into())
    );

    // The redirect URI of the exchange must be the one the authorization carried.
    let (url, pending) = auth.start(ProviderKind::GitLab, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;
    let err = auth
        .finish(
            ProviderKind::GitLab,
            pending,
            &code,
            &state,
            "https://evil.example.com/cb",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Denied(_)), "{err:?}");
}

#[tokio::test]
async fn google_sign_in_verifies_the_id_token() {
    let fake = OAuthFake::start(Flavor::Oidc).await;
    let auth = google(&fake);
    assert_eq!(auth.providers(), vec![ProviderKind::Google]);

    let identity = sign_in(&auth, &fake, ProviderKind::Google).await.unwrap();
    let sent = fake.last_authorize();
    let scopes: Vec<&str> = sent["scope"].split(' ').collect();
    for scope in ["openid", "email", "profile"] {
        assert!(scopes.contains(&scope), "{scopes:?}");
    }
    assert_eq!(sent["code_challenge_method"], "S256");
    assert!(!sent["nonce"].is_empty());
    assert_eq!(identity.provider, ProviderKind::Google);
    assert_eq!(identity.id, "110169484474386276334");
    assert_eq!(identity.login, "Alice@Example.org");
    assert_eq!(identity.name.as_deref(), Some("Alice Liddell"));
    assert!(identity.access_token.is_none());
    assert!(
        auth.is_admin(&identity),
        "e-mail matches case-insensitively"
    );
}

#[tokio::test]
async fn google_refuses_bad_id_tokens() {
    let fake = OAuthFake::start(Flavor::Oidc).await;
    let auth = google(&fake);
    let cases = [
        (
            IdTokenTweak::WrongKey,
            "the ID token's signature does not verify",
        ),
        (
            IdTokenTweak::WrongAudience,
            "the ID token is for another application",
        ),
        (IdTokenTweak::Expired, "the ID token has expired"),
        (
            IdTokenTweak::WrongNonce,
            "the ID token belongs to another sign-in",
        ),
        (
            IdTokenTweak::UnverifiedEmail,
            "the google account's e-mail address is not verified",
        ),
    ];
    for (tweak, why) in cases {
        fake.set_tweak(tweak);
        let err = sign_in(&auth, &fake, ProviderKind::Google)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::Denied(why.into()), "{tweak:?}");
    }
    // Forged tokens: another issuer, no signature at all, and an HMAC made with the
    // client secret (a verifier that took the algorithm from the token would accept
    // both of the last).
    for (tweak, why) in [
        (
            IdTokenTweak::WrongIssuer,
            "the ID token is from another issuer",
        ),
        (
            IdTokenTweak::AlgNone,
            "the ID token's signature does not verify",
        ),
        (
            IdTokenTweak::Hs256,
            "the ID token's signature does not verify",
        ),
    ] {
        fake.set_tweak(tweak);
        let err = sign_in(&auth, &fake, ProviderKind::Google)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::Denied(why.into()), "{tweak:?}");
    }
    // And the untampered token still signs in: the refusals were the tweaks'.
    fake.set_tweak(IdTokenTweak::None);
    assert!(sign_in(&auth, &fake, ProviderKind::Google).await.is_ok());
}

#[tokio::test]
async fn google_wrong_state_and_wrong_verifier() {
    let fake = OAuthFake::start(Flavor::Oidc).await;
    let auth = google(&fake);
    let (url, pending) = auth.start(ProviderKind::Google, REDIRECT).await.unwrap();
    let (code, state) = fake.authorize(&url).await;
    let err = auth
        .finish(
            ProviderKind::Google,
            pending.clone(),
            &code,
            "forged",
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::StateMismatch);
    assert_eq!(fake.token_requests(), 0);

    let err = auth
        .finish(
            ProviderKind::Google,
            with_verifier(&pending, &"x".repeat(50)),
            &code,
            &state,
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::Denied("google refused the sign-in (invalid_grant)".into())
    );
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn unconfigured_providers_are_refused() {
    let auth = authenticator(&[]);
    assert!(auth.providers().is_empty());
    for p in [
        ProviderKind::GitHub,
        ProviderKind::GitLab,
        ProviderKind::Google,
    ] {
        assert_eq!(
            auth.start(p, REDIRECT).await.unwrap_err(),
            AuthError::NotConfigured
        );
    }
    assert_eq!(
        auth.ldap_login("alice", "pw").await.unwrap_err(),
        AuthError::NotConfigured
    );

    // Half a credential pair or a template without {username} is a start-up error.
    let cli = Cli::try_parse_from(["repobox", "--github-client-id", "x", "serve"]).unwrap();
    let err = Authenticator::from_config(&cli.config, reqwest::Client::new()).unwrap_err();
    assert!(
        err.to_string().contains("REPOBOX_GITHUB_CLIENT_SECRET"),
        "{err}"
    );
    let cli = Cli::try_parse_from([
        "repobox",
        "--ldap-url",
        "ldap://127.0.0.1:1",
        "--ldap-user-dn",
        "ou=people,dc=example,dc=org",
        "serve",
    ])
    .unwrap();
    let err = Authenticator::from_config(&cli.config, reqwest::Client::new()).unwrap_err();
    assert!(err.to_string().contains("{username}"), "{err}");
}

#[tokio::test]
async fn is_admin_matches_provider_and_login() {
    let auth = authenticator(&[
        "--admins",
        "github:OctoCat, gitlab:root,google:Alice@Example.org,ldap:alice",
    ]);
    let who = |provider, login: &str| Identity {
        provider,
        id: "1".into(),
        login: login.into(),
        name: None,
        email: None,
        access_token: None,
    };
    assert!(auth.is_admin(&who(ProviderKind::GitHub, "octocat")));
    assert!(auth.is_admin(&who(ProviderKind::GitHub, "OCTOCAT")));
    assert!(auth.is_admin(&who(ProviderKind::GitLab, "root")));
    assert!(auth.is_admin(&who(ProviderKind::Google, "alice@example.org")));
    assert!(auth.is_admin(&who(ProviderKind::Ldap, "Alice")));
    // The same login at another provider is someone else.
    assert!(!auth.is_admin(&who(ProviderKind::GitHub, "root")));
    assert!(!auth.is_admin(&who(ProviderKind::Ldap, "octocat")));
    assert!(!auth.is_admin(&who(ProviderKind::GitHub, "octocat2")));
    assert!(!authenticator(&[]).is_admin(&who(ProviderKind::GitHub, "octocat")));
}

#[tokio::test]
async fn ldap_bind_as_the_user() {
    common::capture_logs();
    let slapd = Slapd::start().await;
    let auth = ldap(&slapd);
    assert_eq!(auth.providers(), vec![ProviderKind::Ldap]);

    let alice = auth.ldap_login("alice", ALICE_PASSWORD).await.unwrap();
    assert_eq!(alice.provider, ProviderKind::Ldap);
    assert_eq!(alice.id, "uid=alice,ou=people,dc=example,dc=org");
    assert_eq!(alice.login, "alice");
    assert_eq!(alice.name.as_deref(), Some("Alice Liddell"));
    assert_eq!(alice.email.as_deref(), Some("alice@example.org"));
    assert!(alice.access_token.is_none());
    assert!(auth.is_admin(&alice));

    // The login is the directory's uid, whatever case was typed.
    let typed = auth.ldap_login("ALICE", ALICE_PASSWORD).await.unwrap();
    assert_eq!(typed.login, "alice");

    let denied = |r: Result<Identity, AuthError>| match r {
        Err(AuthError::Denied(why)) => why,
        other => panic!("expected Denied, got {other:?}"),
    };
    let why = denied(auth.ldap_login("alice", "wrong password").await);
    assert_eq!(why, "wrong username or password");
    denied(auth.ldap_login("nobody", ALICE_PASSWORD).await);
    denied(auth.ldap_login("", ALICE_PASSWORD).await);

    let logs = common::captured_logs();
    assert!(!logs.contains(ALICE_PASSWORD));
}

/// An empty password would be an anonymous ("unauthenticated") bind, which many
/// directories accept; slapd here refuses it by itself, so the guard is tested against a
/// listener that would see any connection: the refusal must come before one is made.
#[tokio::test]
async fn ldap_empty_passwords_are_refused_before_the_directory_is_asked() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    let auth = authenticator(&["--ldap-url", &url, "--ldap-user-dn", USER_DN_TEMPLATE]);
    let result = auth.ldap_login("alice", "").await;
    assert!(
        matches!(&result, Err(AuthError::Denied(why)) if why == "wrong username or password"),
        "{result:?}"
    );
    // The directory would have been connected to (and the bind sent) before any answer.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the directory was contacted for an empty password: {other:?}"),
    }
}

#[tokio::test]
async fn ldap_usernames_cannot_change_the_dn() {
    let slapd = Slapd::start().await;
    let auth = ldap(&slapd);
    for username in [
        "*",
        "alice,ou=people",
        "alice,ou=people,dc=example,dc=org",
        "uid=alice",
        "alice+cn=Alice Liddell",
        "alice)(uid=*",
        "carol",
        "carol,uid=admin",
    ] {
        for password in [ALICE_PASSWORD, CAROL_PASSWORD] {
            let result = auth.ldap_login(username, password).await;
            assert!(
                matches!(result, Err(AuthError::Denied(_))),
                "{username}: {result:?}"
            );
        }
    }
    // A uid that really has a comma in it signs in, escaped into one RDN value.
    let carol = auth
        .ldap_login("carol,admin", CAROL_PASSWORD)
        .await
        .unwrap();
    assert_eq!(carol.login, "carol,admin");
    assert_eq!(carol.name.as_deref(), Some("Carol Comma"));
    let result = auth.ldap_login("carol,admin", ALICE_PASSWORD).await;
    assert!(matches!(result, Err(AuthError::Denied(_))), "{result:?}");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_provider_error() {
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let auth = authenticator(&[
        "--google-client-id",
        CLIENT_ID,
        "--google-client-secret",
        CLIENT_SECRET,
        "--google-issuer-url",
        &closed,
        "--ldap-url",
        &format!("ldap://127.0.0.1:{}", common::free_port()),
        "--ldap-user-dn",
        USER_DN_TEMPLATE,
    ]);
    let err = auth
        .start(ProviderKind::Google, REDIRECT)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::Provider("google discovery failed".into()));
    let err = auth.ldap_login("alice", ALICE_PASSWORD).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::Provider("the directory could not be reached".into())
    );
}
