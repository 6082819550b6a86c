//! A real headless Chromium for the dashboard's browser tests: `chromedriver` of the
//! test's own on a free loopback port, driven over WebDriver with `fantoccini`. The
//! driver runs in a process group of its own, so dropping the [`Browser`] ends it and
//! the Chromium it started, even when the test panicked half-way.
//!
//! No `chromedriver` on the machine is a failure naming `scripts/deps`, never a skip:
//! CI installs Debian's `chromium` and `chromium-driver` through that script.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long the driver may take to answer `/status`, and any wait in a test.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Between two looks at something awaited.
const POLL: Duration = Duration::from_millis(50);

pub struct Browser {
    pub client: Client,
    _driver: Driver,
}

/// The running `chromedriver`, leader of its own process group.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it spawned.
        let group = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chromedriver` on `PATH` (or `$CHROMEDRIVER`), or a failure that says how to get it.
fn chromedriver() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return PathBuf::from(path);
    }
    find_on_path("chromedriver").unwrap_or_else(|| {
        panic!(
            "chromedriver is not installed: run `scripts/deps` (it installs Debian's \
             chromium and chromium-driver), or set CHROMEDRIVER to its path"
        )
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts `chromedriver`, waits until it is ready, and opens a headless Chromium
    /// window of 1280x900.
    pub async fn start() -> Browser {
        let driver_path = chromedriver();
        let port = super::free_port();
        let driver = Command::new(&driver_path)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not start ({e}): run `scripts/deps`",
                    driver_path.display()
                )
            });
        let mut driver = Driver(driver);
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url, &mut driver.0).await;

        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        });
        // Debian's chromedriver finds its chromium, but say which one when it is on PATH.
        if let Some(chromium) = find_on_path("chromium") {
            options["binary"] = json!(chromium);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver on {url} opens no Chromium session: {e}"));
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Ends the WebDriver session (Chromium quits); dropping then ends the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The path of the page shown now (`/jobs`).
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Waits until the page shown is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let seen = self.path().await;
            if seen == path {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the page {path}; the browser shows {seen}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(DEADLINE)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let page = self.client.source().await.unwrap_or_default();
                panic!("no `{css}` on {}: {e}\n{page}", self.path().await)
            }
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
    }

    /// Runs `script` in the page and returns what it returned.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Waits until the text of `css` satisfies `check`; returns that text.
    pub async fn wait_for_text(&self, css: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
            {
                if check(&text) {
                    return text;
                }
                last = text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on the text of `{css}`; last seen: {last:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `check` holds, polling; panics naming `what` after [`DEADLINE`].
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resizes the window (outer size, as WebDriver sets it).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Saves what the window shows as `target/screenshots/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Polls the driver's `/status` until it says ready, failing early if it exited.
async fn wait_for_driver(url: &str, driver: &mut Child) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await
            && let Ok(body) = r.json::<Value>().await
            && body["value"]["ready"] == json!(true)
        {
            return;
        }
        if let Ok(Some(status)) = driver.try_wait() {
            panic!("chromedriver exited ({status}) before it was ready");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver on {url} was not ready within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
