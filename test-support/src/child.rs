//! [`ChildTest`]: a test of the running test binary, run again in a child process, to be killed.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{error, TestDatabaseError};

/// One test of the running test binary, run in a child process of its own (`--exact <test>`),
/// told what to do through environment variables: for writers killed with `SIGKILL` at random
/// moments. The child test must return at once when its variables are not set, as it also runs
/// with the whole suite.
///
/// Dropping it kills the child if it still runs, so a failing test leaves no process behind.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use es_test_support::ChildTest;
///
/// let mut child = ChildTest::spawn("reliability::child_writes", &[("ES_CHILD_DB", "...")])?;
/// std::thread::sleep(Duration::from_millis(300));
/// let status = child.kill()?; // SIGKILL, then reaped
/// assert!(!status.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChildTest {
    child: Child,
    test: String,
}

impl ChildTest {
    /// Runs `test` (its full path in the binary, e.g. `module::child`) of the current test binary
    /// in a child process with `vars` set. Its standard error is this process's; its standard
    /// output is discarded.
    pub fn spawn(test: &str, vars: &[(&str, &str)]) -> Result<Self, TestDatabaseError> {
        let exe = std::env::current_exe().map_err(|e| error(format!("cannot find the test binary: {e}")))?;
        let mut command = Command::new(exe);
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .map_err(|e| error(format!("cannot start the child test {test}: {e}")))?;
        Ok(Self {
            child,
            test: test.to_owned(),
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the child with `SIGKILL` (nothing of it runs after: no destructor, no flush) and
    /// waits for it; returns how it ended (it may have ended by itself before).
    pub fn kill(&mut self) -> Result<ExitStatus, TestDatabaseError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        // `Child::kill` sends SIGKILL on Unix.
        self.child
            .kill()
            .map_err(|e| error(format!("cannot kill the child test {}: {e}", self.test)))?;
        self.child
            .wait()
            .map_err(|e| error(format!("cannot reap the child test {}: {e}", self.test)))
    }

    /// Waits up to `limit` for the child to end by itself; kills it and fails after that.
    pub fn wait_for(&mut self, limit: Duration) -> Result<ExitStatus, TestDatabaseError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.kill();
                    return Err(error(format!(
                        "the child test {} did not end within {limit:?}",
                        self.test
                    )));
                }
                Err(e) => return Err(error(format!("cannot wait for the child test {}: {e}", self.test))),
            }
        }
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(%e, "cannot stop a child test");
        }
    }
}
