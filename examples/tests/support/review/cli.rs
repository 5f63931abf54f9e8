//! The `es` command line of the examples as an operator runs it, and the plain HTTP requests
//! a browser of `es serve` sends: every process killed and reaped when its handle drops, every
//! command bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What follows `close STREAM` when a data protection officer deletes a stream on request.
pub const ERASURE: [&str; 7] = ["--as", "deleted", "--by", "dpo", "--reason", "erasure #42", "--yes"];

/// How long one `es` command may run, unless told otherwise ([`Es::within`]), before the test
/// kills it and fails.
pub const COMMAND_BOUND: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{what}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Ended as the exit table says Ctrl-C ends a command: with 130, by its own hand (not
    /// killed by `SIGINT` itself, which a shell would also report as 130).
    pub fn ended_by_ctrl_c(&self) -> bool {
        self.code == Some(130) && self.signal.is_none()
    }

    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "a panic shown to the operator: {}",
            self.stderr
        );
    }
}

/// The lines of a pipe, read on a thread of their own.
pub fn lines_of(source: impl Read + Send + 'static) -> (mpsc::Receiver<String>, JoinHandle<()>) {
    let (send, receive) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (receive, reader)
}

/// A running `es`: killed and reaped when dropped, so a failing test leaves no process behind.
pub struct Running {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    out_seen: Vec<String>,
    err_seen: Vec<String>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("es starts");
        let (out, out_reader) = lines_of(child.stdout.take().expect("piped"));
        let (err, err_reader) = lines_of(child.stderr.take().expect("piped"));
        Self {
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
            readers: vec![out_reader, err_reader],
        }
    }

    /// The next line of standard output, if one comes within `within`.
    pub fn stdout_line(&mut self, within: Duration) -> Option<String> {
        let line = self.out.recv_timeout(within).ok()?;
        self.out_seen.push(line.clone());
        Some(line)
    }

    /// Waits for a line of standard error starting with `prefix`.
    pub fn stderr_line_starting(&mut self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.err.recv_timeout(left).ok()?;
            self.err_seen.push(line.clone());
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
    }

    /// Ctrl-C: `SIGINT` to this process (by its id) only.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGINT delivered");
    }

    /// Waits for the end (killing it and failing after `bound`), and collects its output.
    pub fn finish(&mut self, bound: Duration) -> Finished {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("es did not end within {bound:?}; output so far: {:?}", self.out_seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.out_seen.extend(self.out.try_iter());
        self.err_seen.extend(self.err.try_iter());
        use std::os::unix::process::ExitStatusExt;
        Finished {
            code: status.code(),
            signal: status.signal(),
            stdout: self.out_seen.join("\n"),
            stderr: self.err_seen.join("\n"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to point `es` at a store: leading arguments, environment, and the user it runs as.
#[derive(Clone)]
pub struct Es {
    pub prefix: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub bound: Duration,
}

impl Es {
    /// `es --db FILE`, run in the file's directory.
    pub fn sqlite(file: &Path) -> Self {
        Self {
            prefix: vec!["--db".into(), file.display().to_string()],
            env: Vec::new(),
            cwd: file.parent().expect("a directory").to_owned(),
            uid: None,
            bound: COMMAND_BOUND,
        }
    }

    /// `es` on the schema `schema` of the server at `url`, run in `cwd`.
    pub fn postgres(url: &str, schema: &str, cwd: &Path) -> Self {
        Self {
            prefix: Vec::new(),
            env: vec![
                ("DATABASE_URL".into(), url.into()),
                ("ES_EXAMPLES_SCHEMA".into(), schema.into()),
            ],
            cwd: cwd.to_owned(),
            uid: None,
            bound: COMMAND_BOUND,
        }
    }

    /// The same, each command bounded by `bound` instead of [`COMMAND_BOUND`].
    pub fn within(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }

    /// The same, run as the unprivileged user `nobody`.
    pub fn run_as_nobody(mut self) -> Self {
        self.uid = Some(65534);
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("es"));
        // The default file `es-examples.db` would land in `cwd`: the test's own directory.
        command
            .current_dir(&self.cwd)
            .env_remove("DATABASE_URL")
            .env_remove("ES_EXAMPLES_DB")
            .env_remove("ES_EXAMPLES_SCHEMA")
            .env_remove("RUST_BACKTRACE");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        command.args(&self.prefix).args(args);
        command
    }

    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    pub fn run(&self, args: &[&str]) -> Finished {
        let finished = self.spawn(args).finish(self.bound);
        finished.assert_no_panic();
        finished
    }

    pub fn expect(&self, args: &[&str], code: i32) -> Finished {
        let finished = self.run(args);
        finished.expect_code(code, &format!("es {args:?}"));
        finished
    }

    /// Runs with `--json`, expects 0 and one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        self.json_exiting(args, 0)
    }

    /// Runs with `--json`, expects `code` and one JSON document.
    pub fn json_exiting(&self, args: &[&str], code: i32) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.expect(&args, code).stdout;
        serde_json::from_str(&out).unwrap_or_else(|error| panic!("es {args:?} printed no JSON ({error}): {out}"))
    }

    /// Runs `log ... --json`: one object per line.
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.expect(&args, 0).stdout;
        out.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
            .collect()
    }

    /// `es serve --port 0`, once it printed its URL.
    pub fn serve(&self) -> Serve {
        let mut running = self.spawn(&["serve", "--port", "0"]);
        let first = running.stdout_line(Duration::from_secs(30));
        let Some(first) = first else {
            let finished = running.finish(Duration::from_secs(5));
            panic!("es serve printed no URL: {finished:?}");
        };
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the first line names the URL: {first}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "on loopback only: {url}");
        Serve { running, url }
    }
}

/// A running `es serve`.
pub struct Serve {
    pub running: Running,
    pub url: String,
}

impl Serve {
    pub fn get(&self, path: &str) -> Response {
        http(&self.url, "GET", path, None)
    }
}

/// What an HTTP request got back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("no JSON ({error}): {}", self.body))
    }
}

/// One plain HTTP/1.1 request on loopback with a std `TcpStream`, bounded by timeouts.
pub fn http(url: &str, method: &str, path: &str, host: Option<&str>) -> Response {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to es serve");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let host = host.unwrap_or(address);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("response");
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The entry of the array `document[list]` that `wanted` picks; fails the test without one.
pub fn entry<'d>(document: &'d Value, list: &str, wanted: impl Fn(&Value) -> bool) -> &'d Value {
    document[list]
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| wanted(entry)))
        .unwrap_or_else(|| panic!("no such entry in `{list}`: {document}"))
}
