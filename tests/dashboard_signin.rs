//! Signing in to the dashboard through its routes: GitHub OAuth against an HTTP fake of
//! github.com (state, PKCE), and LDAP against a real `slapd`. A sign-in renews the
//! session id (the pre-login cookie is dead), records the user, and marks admins.

mod common;

use common::oauth_fake::{CLIENT_ID, CLIENT_SECRET, Flavor, OAuthFake};
use common::slapd::{ALICE_PASSWORD, Slapd, USER_DN_TEMPLATE};
use common::{Options, TestApp};
use repobox::web::dashboard::session::{COOKIE, storage_key};

/// A browser: one cookie, kept up to date from `Set-Cookie`.
struct Browser {
    app_url: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser::from(app, "127.0.0.1")
    }

    /// A browser whose connections come from `address` (any of 127.0.0.0/8).
    fn from(app: &TestApp, address: &str) -> Browser {
        Browser {
            app_url: app.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(address.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// One LDAP sign-in through the login form.
    async fn ldap(&mut self, username: &str, password: &str) -> reqwest::Response {
        let page = self.get("/login").await.text().await.unwrap();
        let token = csrf(&page);
        self.post(
            "/auth/ldap",
            &[
                ("csrf", &token),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for value in r.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            if let Some(pair) = value.split(';').next()
                && pair.starts_with(&format!("{COOKIE}="))
            {
                self.cookie = Some(pair.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.app_url)
        };
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.keep(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        let mut req = self
            .http
            .post(format!("{}{path}", self.app_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish());
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.keep(&r);
        r
    }

    fn session_id(&self) -> String {
        self.cookie
            .as_deref()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    }
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn ldap_sign_in_renews_the_session_records_the_user_and_marks_admins() {
    let slapd = Slapd::start().await;
    let app = TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--ldap-url".into(),
            slapd.url.clone(),
            "--ldap-user-dn".into(),
            USER_DN_TEMPLATE.into(),
            "--admins".into(),
            "ldap:alice".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut b = Browser::new(&app);
    let page = b.get("/login").await.text().await.unwrap();
    assert!(page.contains("Sign in with LDAP"), "{page}");
    let token = csrf(&page);
    let before = b.session_id();

    // A wrong password: 401, the form again, nobody signed in.
    let r = b
        .post(
            "/auth/ldap",
            &[
                ("csrf", &token),
                ("username", "alice"),
                ("password", "hunter2-not-it"),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    assert!(page.contains("class=\"error\""), "{page}");
    assert!(
        !page.contains("hunter2-not-it"),
        "the password is never echoed"
    );
    assert_eq!(location(&b.get("/jobs").await), "/login");
    // Without the form token the directory is not even asked.
    let r = b
        .post(
            "/auth/ldap",
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 403);

    let r = b
        .post(
            "/auth/ldap",
            &[
                ("csrf", &token),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/jobs");
    let after = b.session_id();
    assert_ne!(before, after, "the session id is renewed at sign-in");
    assert_eq!(
        app.store.load_session(&storage_key(&before)).await.unwrap(),
        None
    );
    // The store holds a hash of the cookie value, and nowhere the value itself.
    let stored = app.store.load_session(&storage_key(&after)).await.unwrap();
    assert!(
        stored.as_deref().is_some_and(|s| !s.contains(&after)),
        "{stored:?}"
    );
    let dump = common::world::stored_text(&app).await;
    assert!(!dump.contains(&after), "the cookie value is in Redis");
    let page = b.get("/jobs").await.text().await.unwrap();
    assert!(page.contains("All jobs"), "alice is an admin: {page}");
    assert!(page.contains("alice · admin"), "{page}");
    let mut conn = app.conn().await;
    let keys = common::scan(&mut conn, &format!("{}user:ldap:", app.prefix)).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
}

/// The app signing in with GitHub's OAuth against `fake` (also its API).
async fn github_app(fake: &OAuthFake) -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--github-client-id".into(),
            CLIENT_ID.into(),
            "--github-client-secret".into(),
            CLIENT_SECRET.into(),
            "--github-api-url".into(),
            fake.url.clone(),
            "--github-web-url".into(),
            fake.url.clone(),
        ],
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn github_sign_in_checks_state_and_pkce_through_the_routes() {
    let fake = OAuthFake::start(Flavor::GitHub).await;
    let app = github_app(&fake).await;
    let mut b = Browser::new(&app);
    let page = b.get("/login").await.text().await.unwrap();
    assert!(page.contains("href=\"/auth/github\""), "{page}");
    assert!(!page.contains("Sign in with LDAP"));

    // A callback whose state is not the one sent: refused before any token request.
    let r = b.get("/auth/github").await;
    assert_eq!(r.status(), 303);
    let (code, _state) = fake.authorize(&location(&r)).await;
    let r = b
        .get(&format!("/auth/github/callback?code={code}&state=forged"))
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(fake.token_requests(), 0);
    // Replaying it with the right state fails too: the forged try used up the pending
    // sign-in, so nothing is asked of the provider.
    let r = b
        .get(&format!("/auth/github/callback?code={code}&state={_state}"))
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(fake.token_requests(), 0);
    let before = b.session_id();

    let r = b.get("/auth/github").await;
    let authorize = location(&r);
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(authorize.contains(&format!(
        "redirect_uri={}",
        url::form_urlencoded::byte_serialize(b"https://repobox.example.com/auth/github/callback")
            .collect::<String>()
    )));
    let (code, state) = fake.authorize(&authorize).await;
    let r = b
        .get(&format!("/auth/github/callback?code={code}&state={state}"))
        .await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(fake.token_requests(), 1);
    assert_ne!(b.session_id(), before);
    let page = b.get("/jobs").await.text().await.unwrap();
    assert!(
        page.contains("Your jobs") && page.contains("octocat"),
        "{page}"
    );
}

async fn ldap_app(slapd: &Slapd) -> TestApp {
    TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--ldap-url".into(),
            slapd.url.clone(),
            "--ldap-user-dn".into(),
            USER_DN_TEMPLATE.into(),
        ],
        ..Options::default()
    })
    .await
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_eleventh_failed_sign_in_for_a_name_is_refused_from_any_address() {
    let slapd = Slapd::start().await;
    let app = ldap_app(&slapd).await;
    let mut guesser = Browser::from(&app, "127.0.0.2");
    for n in 0..10 {
        let r = guesser.ldap("alice", &format!("guess-{n}")).await;
        assert_eq!(r.status(), 401, "guess {n}");
    }
    // The right password, from another address: still refused until the window ends.
    let mut alice = Browser::from(&app, "127.0.0.3");
    let r = alice.ldap("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status(), 429);
    let wait = retry_after(&r);
    assert!((1..=600).contains(&wait), "Retry-After: {wait}");
    assert_eq!(location(&alice.get("/jobs").await), "/login");
    // Another user from that address is not held up by alice's count.
    let r = alice
        .ldap("carol,admin", common::slapd::CAROL_PASSWORD)
        .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn the_eleventh_failed_sign_in_from_an_address_is_refused_for_any_name() {
    let slapd = Slapd::start().await;
    let app = ldap_app(&slapd).await;
    let mut sprayer = Browser::from(&app, "127.0.0.4");
    for n in 0..10 {
        let r = sprayer.ldap(&format!("user{n}"), "Winter2026!").await;
        assert_eq!(r.status(), 401, "try {n}");
    }
    let r = sprayer.ldap("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(retry_after(&r) >= 1);
    // alice from her own address signs in: her name has no failures.
    let mut alice = Browser::from(&app, "127.0.0.5");
    assert_eq!(alice.ldap("alice", ALICE_PASSWORD).await.status(), 303);
}

/// Signs `b` in through the provider's routes (the fake authorizes at once).
async fn sign_in_through(b: &mut Browser, fake: &OAuthFake, provider: &str) {
    let r = b.get(&format!("/auth/{provider}")).await;
    let (code, state) = fake.authorize(&location(&r)).await;
    let r = b
        .get(&format!(
            "/auth/{provider}/callback?code={code}&state={state}"
        ))
        .await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
}

/// The `datalist` suggestions of `/jobs/new`.
fn suggestions(page: &str) -> Vec<String> {
    let Some(at) = page.find("<datalist id=\"repos\">") else {
        return Vec::new();
    };
    let list = &page[at..at + page[at..].find("</datalist>").unwrap()];
    list.split("<option value=\"")
        .skip(1)
        .map(|o| o.split('"').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_picker_lists_what_the_user_can_write_to_asked_with_their_own_token() {
    let fake = OAuthFake::start(Flavor::GitHub).await;
    let app = github_app(&fake).await;
    let mut b = Browser::new(&app);
    sign_in_through(&mut b, &fake, "github").await;
    let page = b.get("/jobs/new").await.text().await.unwrap();
    // The documented example repository is pull-only for this user: not suggested.
    assert_eq!(
        suggestions(&page),
        vec!["github:octocat/writable"],
        "{page}"
    );
    // The example lists two installations: one call for them, one for each's repositories.
    assert_eq!(fake.list_requests(), 3);
    // Within five minutes the list comes from the cache: no API call per page view.
    let again = b.get("/jobs/new").await.text().await.unwrap();
    assert_eq!(suggestions(&again), vec!["github:octocat/writable"]);
    assert_eq!(fake.list_requests(), 3);
    // The user's token is kept sealed.
    let dump = common::world::stored_text(&app).await;
    assert!(
        !dump.contains("fake_"),
        "a user token in Redis in plain text"
    );

    // Someone signed in without a forge token is shown nothing, and nothing is asked.
    let other = app
        .sign_in(&repobox::web::dashboard::session::SessionUser {
            provider: "github".into(),
            id: "77".into(),
            login: "someone".into(),
            name: None,
            admin: false,
        })
        .await;
    let page = reqwest::Client::new()
        .get(format!("{}/jobs/new", app.url))
        .header("cookie", &other.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(suggestions(&page).is_empty(), "{page}");
    assert_eq!(fake.list_requests(), 3);
}

#[tokio::test]
async fn the_gitlab_picker_asks_for_developer_access_and_above() {
    let fake = OAuthFake::start(Flavor::GitLab).await;
    let app = TestApp::start(Options {
        acknowledger: false,
        args: vec![
            "--gitlab-client-id".into(),
            CLIENT_ID.into(),
            "--gitlab-client-secret".into(),
            CLIENT_SECRET.into(),
            "--gitlab-url".into(),
            fake.url.clone(),
            "--gitlab-token".into(),
            "glpat-bot-token-0123456789".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut b = Browser::new(&app);
    sign_in_through(&mut b, &fake, "gitlab").await;
    let page = b.get("/jobs/new").await.text().await.unwrap();
    assert_eq!(
        suggestions(&page),
        vec!["gitlab:group/developer-here"],
        "{page}"
    );
    assert_eq!(fake.list_requests(), 1);
}
