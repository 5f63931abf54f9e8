//! A small WebDriver client over plain HTTP/1.1 and JSON: starts ChromeDriver, opens a
//! headless Chromium session, and offers the few commands the browser test needs. Every
//! network call has a timeout, every wait a deadline, and dropping the session and the driver
//! closes the browser and ends the driver's process.

#![allow(dead_code)] // the client offers a little more than one test uses

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one command may take (a new session starts a browser: longer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the driver may take to answer `/status` as ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(50);

/// A running ChromeDriver, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("no free port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| error.to_string())
}

impl Driver {
    /// Starts `chromedriver` on a free port, logging to `log`, and waits (30 s at most) until
    /// it says it is ready.
    pub fn start(chromedriver: &Path, log: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", chromedriver.display()))?;
        let mut driver = Self { child, port };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok((200, status)) = http(port, "GET", "/status", None, Duration::from_secs(5)) {
                if status["value"]["ready"] == true {
                    return Ok(driver);
                }
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                return Err(format!(
                    "chromedriver exited at startup ({exit}); see {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver was not ready within {STARTUP_TIMEOUT:?}; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange with the driver: the status and the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> Result<(u16, Value), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("{method} {path}: cannot connect: {error}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(|error| error.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket
        .write_all(request.as_bytes())
        .map_err(|error| format!("{method} {path}: {error}"))?;
    // ChromeDriver keeps the connection open whatever the request says: read the head, then
    // as many bytes as its Content-Length (or chunks up to the last one).
    let mut response = Vec::new();
    let mut buffer = [0_u8; 16 * 1024];
    let (head, mut content) = loop {
        if let Some(split) = response.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
            break (head, response[split + 4..].to_vec());
        }
        let read = socket
            .read(&mut buffer)
            .map_err(|error| format!("{method} {path}: no answer within {timeout:?}: {error}"))?;
        if read == 0 {
            return Err(format!(
                "{method} {path}: the connection closed before the answer's head"
            ));
        }
        response.extend_from_slice(&buffer[..read]);
    };
    let length: Option<usize> = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|length| length.trim().parse().ok());
    let chunked = head.contains("transfer-encoding: chunked") || head.contains("transfer-encoding:chunked");
    loop {
        let complete = match length {
            Some(length) => content.len() >= length,
            None if chunked => content.windows(5).any(|window| window == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let read = socket
            .read(&mut buffer)
            .map_err(|error| format!("{method} {path}: the answer was cut short: {error}"))?;
        if read == 0 {
            break;
        }
        content.extend_from_slice(&buffer[..read]);
    }
    if chunked {
        content = dechunk(&content)?;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head}"))?;
    let value = if content.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&content).map_err(|error| format!("{method} {path}: not JSON: {error}"))?
    };
    Ok((status, value))
}

/// The body of a chunked transfer.
fn dechunk(mut chunked: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&chunked[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|error| format!("chunk size: {error}"))?;
        if size == 0 {
            return Ok(body);
        }
        let start = line_end + 2;
        let chunk = chunked.get(start..start + size).ok_or("a chunk cut short")?;
        body.extend_from_slice(chunk);
        chunked = chunked.get(start + size + 2..).ok_or("a chunk cut short")?;
    }
}

/// Standard base64 (with padding), as screenshots come.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |byte: u8| -> Result<u32, String> {
        Ok(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            other => return Err(format!("not base64: {other:#x}")),
        }
        .into())
    };
    let bytes: Vec<u8> = text.bytes().filter(|byte| !byte.is_ascii_whitespace()).collect();
    let mut decoded = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let data: Vec<u8> = quad.iter().copied().filter(|&byte| byte != b'=').collect();
        let mut bits = 0_u32;
        for &byte in &data {
            bits = (bits << 6) | value(byte)?;
        }
        bits <<= 6 * (4 - data.len() as u32);
        let all = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        decoded.extend_from_slice(&all[..data.len().saturating_sub(1)]);
    }
    Ok(decoded)
}

/// A browser session, closed on drop.
pub struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

/// An element of the current page.
pub struct Element<'s> {
    session: &'s Session<'s>,
    id: String,
}

impl<'d> Session<'d> {
    /// Opens headless Chromium (`chromium`, with `args`) through `driver`.
    pub fn new(driver: &'d Driver, chromium: &Path, args: &[&str]) -> Result<Self, String> {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                // An alert stays open (rather than being dismissed) so the test can see it.
                "unhandledPromptBehavior": "ignore",
                "goog:chromeOptions": { "binary": chromium, "args": args },
            }}
        });
        let (status, answer) = http(driver.port, "POST", "/session", Some(&capabilities), SESSION_TIMEOUT)?;
        let id = answer["value"]["sessionId"]
            .as_str()
            .filter(|_| status == 200)
            .ok_or_else(|| format!("no session ({status}): {answer}"))?;
        Ok(Self {
            driver,
            id: id.to_owned(),
        })
    }

    /// Sends a command of this session; its `value`, or the driver's error as text.
    pub fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.id);
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, answer) = http(self.driver.port, method, &path, body.as_ref(), COMMAND_TIMEOUT)?;
        let value = answer["value"].clone();
        if status == 200 {
            Ok(value)
        } else {
            Err(format!(
                "{method} {path}: {status} {}: {}",
                value["error"], value["message"]
            ))
        }
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url }))).map(drop)
    }

    /// The current page's URL.
    pub fn url(&self) -> Result<String, String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The current page's title.
    pub fn title(&self) -> Result<String, String> {
        Ok(self
            .command("GET", "/title", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The elements that match `css` now (none is not an error).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, String> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element[ELEMENT].as_str())
            .map(|id| Element {
                session: self,
                id: id.to_owned(),
            })
            .collect())
    }

    /// The first element that matches `css`, waiting for it up to `timeout`.
    pub fn find(&self, css: &str, timeout: Duration) -> Result<Element<'_>, String> {
        self.wait(&format!("an element `{css}`"), timeout, || {
            Ok(self.find_all(css)?.into_iter().next())
        })
    }

    /// Calls `check` until it returns something, up to `timeout`; its last error, or a timeout
    /// naming `what`.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check() {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => None,
                Err(error) => Some(error),
            };
            if Instant::now() > deadline {
                let url = self.url().unwrap_or_default();
                let why = last.map_or_else(String::new, |error| format!(" (last error: {error})"));
                return Err(format!("waited {timeout:?} for {what} on {url}{why}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `script` in the page; what it returns.
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// The text of the open alert, confirm or prompt, if one is open.
    pub fn alert_text(&self) -> Result<Option<String>, String> {
        let path = format!("/session/{}/alert/text", self.id);
        let (status, answer) = http(self.driver.port, "GET", &path, None, COMMAND_TIMEOUT)?;
        match (status, answer["value"]["error"].as_str()) {
            (200, _) => Ok(Some(answer["value"].as_str().unwrap_or_default().to_owned())),
            (_, Some("no such alert")) => Ok(None),
            _ => Err(format!("GET {path}: {status} {answer}")),
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<PathBuf, String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        let png = base64_decode(encoded.as_str().ok_or("a screenshot that is not text")?)?;
        if !png.starts_with(b"\x89PNG") {
            return Err("the screenshot is not a PNG".into());
        }
        std::fs::write(path, png).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(path.to_owned())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Closes the browser; the driver's process is ended by its own drop.
        let path = format!("/session/{}", self.id);
        let _ = http(self.driver.port, "DELETE", &path, None, COMMAND_TIMEOUT);
    }
}

impl Element<'_> {
    /// Clicks it.
    pub fn click(&self) -> Result<(), String> {
        self.session
            .command("POST", &format!("/element/{}/click", self.id), None)
            .map(drop)
    }

    /// Its rendered text.
    pub fn text(&self) -> Result<String, String> {
        let text = self
            .session
            .command("GET", &format!("/element/{}/text", self.id), None)?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) -> Result<(), String> {
        self.session
            .command(
                "POST",
                &format!("/element/{}/value", self.id),
                Some(json!({ "text": text })),
            )
            .map(drop)
    }

    /// Empties a field.
    pub fn clear(&self) -> Result<(), String> {
        self.session
            .command("POST", &format!("/element/{}/clear", self.id), None)
            .map(drop)
    }
}

#[test]
fn base64_and_chunks_decode() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Ok(&b"hello"[..]));
    assert_eq!(base64_decode("aGk=").as_deref(), Ok(&b"hi"[..]));
    assert_eq!(base64_decode("YWJj").as_deref(), Ok(&b"abc"[..]));
    assert_eq!(
        dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(),
        Ok(&b"abcde"[..])
    );
}
