//! A headless Chromium (Debian's `chromium`, installed by `cargo xtask
//! setup`) driven over the DevTools protocol, for the status page's test.
//!
//! The protocol runs on a pipe (`--remote-debugging-pipe`: the browser
//! reads commands from fd 3 and writes answers and events to fd 4, each
//! message JSON ended by a NUL), so no debugging port is opened and the
//! browser can run inside a test's network namespace (`ip netns exec`).
//! A reader thread answers what the browser asks on its own (requests
//! paused by the `Fetch` domain, HTTP authentication challenges) and
//! collects every console error, uncaught exception and error log entry.
//!
//! Cleanup: dropping a [`Browser`] asks it to close, then kills its process
//! group (renderers and helpers with it) and removes its profile directory;
//! the browser also gets SIGKILL if the test process dies
//! (`PR_SET_PDEATHSIG`).
use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

use crate::netns::TempDir;

/// How long one protocol command may take (a navigation waits for load).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Basic credentials the browser gives when a page asks (as a person
/// would type them into its dialog).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>;

/// What the reader thread shares.
struct Shared {
    writer: Mutex<File>,
    pending: Pending,
    /// Console errors, exceptions, error log entries, crashes.
    errors: Mutex<Vec<String>>,
    /// How many times the browser asked for credentials.
    challenges: AtomicU64,
    credentials: Option<Credentials>,
    next_id: AtomicU64,
}

impl Shared {
    fn send(&self, method: &str, params: Value, session: Option<&str>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        let mut w = self.writer.lock().expect("pipe lock");
        // A browser that is gone shows as a timeout of the caller.
        let _ = w.write_all(&bytes).and_then(|()| w.flush());
        id
    }

    /// An event: answer what must be answered, record what went wrong.
    fn event(&self, msg: &Value) {
        let method = msg["method"].as_str().unwrap_or_default();
        let params = &msg["params"];
        let session = msg["sessionId"].as_str();
        match method {
            "Fetch.requestPaused" => {
                self.send(
                    "Fetch.continueRequest",
                    json!({ "requestId": params["requestId"] }),
                    session,
                );
            }
            "Fetch.authRequired" => {
                self.challenges.fetch_add(1, Ordering::Relaxed);
                let response = match &self.credentials {
                    Some(c) => json!({ "response": "ProvideCredentials",
                                       "username": c.user, "password": c.password }),
                    None => json!({ "response": "CancelAuth" }),
                };
                self.send(
                    "Fetch.continueWithAuth",
                    json!({ "requestId": params["requestId"], "authChallengeResponse": response }),
                    session,
                );
            }
            "Runtime.consoleAPICalled"
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                self.error(format!("console.{}: {}", params["type"], params["args"]));
            }
            "Runtime.exceptionThrown" => {
                self.error(format!("exception: {}", params["exceptionDetails"]));
            }
            "Log.entryAdded" if params["entry"]["level"] == "error" => {
                self.error(format!(
                    "log ({}): {} {}",
                    params["entry"]["source"], params["entry"]["text"], params["entry"]["url"]
                ));
            }
            "Inspector.targetCrashed" | "Target.targetCrashed" => {
                self.error(format!("crashed: {params}"));
            }
            _ => {}
        }
    }

    fn error(&self, e: String) {
        self.errors.lock().expect("errors lock").push(e);
    }
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    shared: Arc<Shared>,
    session: String,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    _profile: TempDir,
}

/// A pipe whose two ends are at fd 10 or above, close-on-exec, so the
/// child's dup2 onto 3 and 4 cannot clobber one with the other.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: i32| {
        // SAFETY: fcntl on an fd we own; the copy is owned by the result.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(copy >= 10, "fcntl F_DUPFD_CLOEXEC");
        // SAFETY: `fd` is ours and no longer used.
        unsafe { libc::close(fd) };
        // SAFETY: `copy` is a fresh fd nobody else owns.
        unsafe { OwnedFd::from_raw_fd(copy) }
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Starts `chromium` headless in network namespace `ns` (root needs
    /// `--no-sandbox`), its profile in a fresh directory under `scratch`,
    /// and opens a blank page. `credentials` answer HTTP authentication.
    pub fn launch(ns: &str, scratch: &std::path::Path, credentials: Option<Credentials>) -> Self {
        crate::proc::require_tool("chromium");
        let profile = TempDir::new(scratch.join("chromium-profile"));
        let (to_browser_r, to_browser_w) = pipe();
        let (from_browser_r, from_browser_w) = pipe();
        let (cmd_fd, out_fd) = {
            use std::os::fd::AsRawFd;
            (to_browser_r.as_raw_fd(), from_browser_w.as_raw_fd())
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--password-store=basic",
                "--use-mock-keychain",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1440,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, dup2) between fork
        // and exec. dup2 leaves the new fds without close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::dup2(cmd_fd, 3) != 3
                    || libc::dup2(out_fd, 4) != 4
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start chromium");
        // The child holds its own copies now.
        drop(to_browser_r);
        drop(from_browser_w);
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if crate::proc::verbose() {
                    eprintln!("[chromium] {line}");
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let shared = Arc::new(Shared {
            writer: Mutex::new(File::from(to_browser_w)),
            pending: Arc::default(),
            errors: Mutex::default(),
            challenges: AtomicU64::new(0),
            credentials,
            next_id: AtomicU64::new(1),
        });
        let reader = {
            let shared = Arc::clone(&shared);
            let input = File::from(from_browser_r);
            thread::spawn(move || {
                let mut input = BufReader::new(input);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match input.read_until(0, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if buf.last() == Some(&0) {
                        buf.pop();
                    }
                    let Ok(msg) = serde_json::from_slice::<Value>(&buf) else {
                        continue;
                    };
                    match msg["id"].as_u64() {
                        Some(id) => {
                            let waiter = shared.pending.lock().expect("pending lock").remove(&id);
                            if let Some(w) = waiter {
                                let _ = w.send(msg);
                            }
                        }
                        None => shared.event(&msg),
                    }
                }
            })
        };
        let mut browser = Browser {
            child,
            shared,
            session: String::new(),
            reader: Some(reader),
            stderr: Some(stderr),
            _profile: profile,
        };
        let target = browser.browser_call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.browser_call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call("Fetch.enable", json!({ "handleAuthRequests": true }));
        browser
    }

    fn call_in(&self, method: &str, params: Value, session: Option<&str>) -> Value {
        let (tx, rx) = mpsc::channel();
        // Register before sending, so a quick answer is not missed.
        let mut pending = self.shared.pending.lock().expect("pending lock");
        let id = self.shared.send(method, params, session);
        pending.insert(id, tx);
        drop(pending);
        let msg = rx.recv_timeout(CALL_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "chromium did not answer {method} within {CALL_TIMEOUT:?}\n{}",
                self.diagnostics()
            )
        });
        if let Some(e) = msg.get("error") {
            panic!("chromium refused {method}: {e}");
        }
        msg["result"].clone()
    }

    fn browser_call(&self, method: &str, params: Value) -> Value {
        self.call_in(method, params, None)
    }

    /// A DevTools command on the page; its `result`.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.call_in(method, params, Some(&self.session))
    }

    /// Opens `url` and waits for the document to have loaded.
    pub fn navigate(&self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url}: {e}\n{}", self.diagnostics());
        }
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
            "the page loaded",
        );
    }

    /// The value of a JavaScript expression in the page (JSON values only).
    pub fn eval(&self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`; panics after `within`.
    pub fn wait_for(&self, expression: &str, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(expression) == json!(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "the page did not show {what} within {within:?} ({expression})\n{}",
                self.diagnostics()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Console errors, exceptions and error log entries so far.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().expect("errors lock").clone()
    }

    /// How many times a page asked for credentials.
    pub fn challenges(&self) -> u64 {
        self.shared.challenges.load(Ordering::Relaxed)
    }

    /// A PNG of the whole page (beyond the viewport).
    pub fn screenshot(&self) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let data = r["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64")
    }

    /// The errors seen so far, for panic messages.
    pub fn diagnostics(&self) -> String {
        format!("browser errors: {:?}", self.errors())
    }

    /// Asks the browser to close, then makes sure its whole process group
    /// is gone.
    fn close(&mut self) {
        let _ = self.shared.send("Browser.close", json!({}), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) on the process group created for the browser
        // (also after the main process ended: helpers may linger).
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.close();
        // The pipes close with the browser, which ends both threads.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(s) = self.stderr.take() {
            let _ = s.join();
        }
    }
}
