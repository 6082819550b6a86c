//! Dashboard users and personal providers on a real Redis, and secrets at rest: a
//! provider token is stored sealed (AES-256-GCM), so no key under the prefix holds it
//! in plain text, and only the right key and context open it.

mod common;

use common::{Options, TestApp};
use redis::AsyncCommands;
use repobox::crypto::{CryptoError, SecretBox};
use repobox::model::ForgeKind;
use repobox::store::{Provider, StoreError, User};
use time::OffsetDateTime;
use ulid::Ulid;

const TOKEN: &str = "glpat-PlainTextTokenNeverAtRest0042";
const KEY: [u8; 32] = [0x42; 32];

async fn app() -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        ..Options::default()
    })
    .await
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

fn user(provider: &str, id: &str, login: &str) -> User {
    User {
        provider: provider.into(),
        id: id.into(),
        login: login.into(),
        name: Some(format!("{login} Example")),
        email: None,
        created_at: at(0),
        last_login_at: at(0),
    }
}

fn provider(sealer: &SecretBox, owner: &str, label: &str, secs: i64) -> Provider {
    let id = Ulid::new();
    Provider {
        id,
        owner: owner.into(),
        kind: ForgeKind::GitLab,
        url: "https://gitlab.example.com".into(),
        label: label.into(),
        token: sealer.seal(TOKEN, &Provider::token_context(id)),
        created_at: at(secs),
    }
}

#[tokio::test]
async fn users_are_created_once_and_updated_on_each_login() {
    let app = app().await;
    assert_eq!(app.store.get_user("github", "7").await.unwrap(), None);
    let first = user("github", "7", "alice");
    app.store.upsert_user(&first).await.unwrap();
    assert_eq!(
        app.store.get_user("github", "7").await.unwrap(),
        Some(first.clone())
    );
    assert!(app.keys().await.contains(&"user:github:7".to_owned()));

    // A later login: new login name and time; created_at stays.
    let mut again = first.clone();
    again.login = "alice2".into();
    again.email = Some("alice@example.com".into());
    again.created_at = at(500);
    again.last_login_at = at(600);
    app.store.upsert_user(&again).await.unwrap();
    let stored = app.store.get_user("github", "7").await.unwrap().unwrap();
    assert_eq!(stored.login, "alice2");
    assert_eq!(stored.email.as_deref(), Some("alice@example.com"));
    assert_eq!(stored.created_at, at(0));
    assert_eq!(stored.last_login_at, at(600));
    assert_eq!(stored.owner(), "github:7");
    // Another sign-in provider with the same id is another user.
    assert_eq!(app.store.get_user("gitlab", "7").await.unwrap(), None);
    app.stop().await;
}

#[tokio::test]
async fn providers_are_listed_per_owner_and_only_the_owner_deletes_them() {
    let app = app().await;
    let sealer = SecretBox::new(&KEY);
    let a1 = provider(&sealer, "github:1", "work", 1);
    let a2 = provider(&sealer, "github:1", "home", 2);
    let b1 = provider(&sealer, "gitlab:9", "theirs", 3);
    for p in [&a2, &a1, &b1] {
        app.store.add_provider(p).await.unwrap();
    }
    let listed = app.store.list_providers("github:1").await.unwrap();
    assert_eq!(listed, vec![a1.clone(), a2.clone()], "oldest first");
    assert_eq!(
        app.store.list_providers("gitlab:9").await.unwrap(),
        vec![b1.clone()]
    );
    assert!(
        app.store
            .list_providers("github:2")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.store.get_provider(a1.id).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(app.store.get_provider(Ulid::new()).await.unwrap(), None);
    let keys = app.keys().await;
    assert!(keys.contains(&format!("provider:{}", a1.id)), "{keys:?}");
    assert!(
        keys.contains(&"providers:by-user:github:1".to_owned()),
        "{keys:?}"
    );

    // Someone else's provider is not deleted.
    assert!(!app.store.delete_provider("gitlab:9", a1.id).await.unwrap());
    assert!(app.store.get_provider(a1.id).await.unwrap().is_some());
    assert!(app.store.delete_provider("github:1", a1.id).await.unwrap());
    assert_eq!(app.store.get_provider(a1.id).await.unwrap(), None);
    assert_eq!(
        app.store.list_providers("github:1").await.unwrap(),
        vec![a2.clone()]
    );
    assert!(!app.store.delete_provider("github:1", a1.id).await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_plain_token_is_refused_and_nothing_is_written() {
    let app = app().await;
    let before = app.keys().await;
    let mut p = provider(&SecretBox::new(&KEY), "github:1", "oops", 1);
    p.token = TOKEN.into();
    let err = app.store.add_provider(&p).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
    assert_eq!(app.keys().await, before);
    app.stop().await;
}

/// The token is sealed by the dashboard's own route (`POST /settings/providers`), not
/// by the test: what reaches Redis is what production writes.
#[tokio::test]
async fn no_key_under_the_prefix_holds_the_plain_token() {
    let app = app().await;
    let owner = user("gitlab", "12", "bob");
    app.store.upsert_user(&owner).await.unwrap();
    let bob = app
        .sign_in(&repobox::web::dashboard::session::SessionUser {
            provider: "gitlab".into(),
            id: "12".into(),
            login: "bob".into(),
            name: None,
            admin: false,
        })
        .await;
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("csrf", &bob.csrf)
        .append_pair("kind", "gitlab")
        .append_pair("url", "https://gitlab.example.com")
        .append_pair("label", "GitLab at work")
        .append_pair("token", TOKEN);
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/settings/providers", app.url))
        .header("cookie", &bob.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let providers = app.store.list_providers(&owner.owner()).await.unwrap();
    assert_eq!(providers.len(), 1);
    let p = &providers[0];

    // Typed reads of every key.
    let text = common::world::stored_text(&app).await;
    assert!(text.contains(&format!("provider:{}", p.id)), "{text}");
    assert!(!text.contains(TOKEN), "plain token in Redis: {text}");
    assert!(
        !text.contains("PlainTextToken"),
        "part of the token in Redis"
    );
    // And the raw serialisation of every key (DUMP), whatever its type.
    let mut conn = app.conn().await;
    let keys = common::scan(&mut conn, &app.prefix).await;
    assert!(keys.len() >= 3, "{keys:?}");
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !dump.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "plain token in the dump of {key}"
        );
    }

    // The stored text is the sealed form, and opens back only with the server's key
    // and this provider's context.
    let stored: String = conn
        .hget(format!("{}provider:{}", app.prefix, p.id), "token")
        .await
        .unwrap();
    assert!(stored.starts_with("v1."), "{stored}");
    let key: [u8; 32] = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        common::TEST_SECRET_KEY,
    )
    .unwrap()
    .try_into()
    .unwrap();
    let sealer = SecretBox::new(&key);
    let context = Provider::token_context(p.id);
    assert_eq!(sealer.open(&stored, &context).unwrap().expose(), TOKEN);
    assert_eq!(
        SecretBox::new(&[0x43; 32])
            .open(&stored, &context)
            .unwrap_err(),
        CryptoError::Open
    );
    // Copied into another provider's record, it does not open there.
    assert_eq!(
        sealer
            .open(&stored, &Provider::token_context(Ulid::new()))
            .unwrap_err(),
        CryptoError::Open
    );
    app.stop().await;
}
