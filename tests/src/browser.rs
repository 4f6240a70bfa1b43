//! A real browser for tests of the operator console: Debian's headless `chromium`,
//! driven over WebDriver by `chromedriver` (started here on a free loopback port and
//! stopped by its PID on drop) through `fantoccini`. Calls block, like the rest of the
//! harness; waits poll a condition until a deadline.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a page gets to show what a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A headless Chromium session.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    shots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a Chromium window of 1280x900 with a fresh profile in
    /// `profile_dir`. Screenshots go to `shots` (created).
    pub fn start(profile_dir: &Path, shots: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/run.sh installs it)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // As root in CI: no sandbox; no background traffic to the internet (the
                // machine has none, and the console must not need it).
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile_dir.display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://{addr}")),
            )
            .expect("a Chromium session from chromedriver");
        std::fs::create_dir_all(shots).unwrap();
        Browser {
            rt,
            client: Some(client),
            driver,
            shots: shots.to_path_buf(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap();
    }

    /// Runs `script` in the page (`return …` gives its value).
    pub fn exec(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, vec![]))
            .unwrap()
    }

    fn find_all(&self, css: &str) -> Vec<Element> {
        self.rt
            .block_on(self.client().find_all(Locator::Css(css)))
            .unwrap_or_default()
    }

    /// The visible text of every element matching `css` (none: empty).
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.find_all(css)
            .into_iter()
            .filter_map(|e| self.rt.block_on(e.text()).ok())
            .collect()
    }

    /// The text of the first element matching `css`, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        self.texts(css).into_iter().next()
    }

    /// Waits until `cond` holds of the texts matching `css`; returns them.
    pub fn wait_texts(
        &self,
        what: &str,
        css: &str,
        cond: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let texts = self.texts(css);
            if cond(&texts) {
                return texts;
            }
            if started.elapsed() > DEADLINE {
                let shot = self.screenshot("timeout");
                panic!(
                    "{what}: `{css}` shows {texts:?} after {DEADLINE:?} (screenshot {})",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the first element matching `css` has a text satisfying `cond`.
    pub fn wait_text(&self, what: &str, css: &str, cond: impl Fn(&str) -> bool) -> String {
        self.wait_texts(what, css, |t| t.first().is_some_and(|t| cond(t)))
            .swap_remove(0)
    }

    /// Types `text` into the field `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let field = self.find(css);
        self.rt.block_on(field.clear()).unwrap();
        self.rt.block_on(field.send_keys(text)).unwrap();
    }

    /// Clicks `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.rt.block_on(e.click()).unwrap();
    }

    fn find(&self, css: &str) -> Element {
        self.rt
            .block_on(
                self.client()
                    .wait()
                    .at_most(DEADLINE)
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// Saves a PNG of the window as `NAME.png` in the screenshot directory.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.client().screenshot()).unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test's screenshots go: `target/test-artifacts/console/TEST` (kept after
/// the run, for people to look at).
pub fn screenshot_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts/console")
        .join(test)
}
