//! Throwaway PostgreSQL clusters: found binaries, `initdb`, `pg_ctl` and the watchdog that
//! removes a cluster once the process is gone.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{error, TestDatabaseError};

/// How long `pg_ctl` may wait for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT: &str = "60";

/// A PostgreSQL cluster of this process: a data directory inside a fresh temporary directory,
/// made by `initdb` with trust authentication. A watchdog process stops its server and deletes
/// the directory once this process has exited, however it exits. As root, the server runs as
/// the unprivileged `postgres` user (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// Whom to run them as, when not this process's user.
    user: Option<&'static str>,
    /// The temporary directory: `data/`, `server.log` and the Unix socket.
    dir: PathBuf,
}

impl Cluster {
    /// Creates a cluster from the newest PostgreSQL binaries on the machine; `no_binaries` is the
    /// error message when there are none.
    pub(crate) fn create(no_binaries: &str) -> Result<Self, TestDatabaseError> {
        let bin = binary_dirs().into_iter().next().ok_or_else(|| error(no_binaries))?;
        let user = server_user();
        let dir = std::env::temp_dir().join(format!(
            "es-postgres-test-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        // From here on the watchdog owns the directory: it deletes it when this process is gone,
        // even if the server never starts.
        spawn_watchdog(&bin, &dir, user)?;
        if let Some(user) = user {
            let (uid, gid) = (id_of("-u", user)?, id_of("-g", user)?);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| error(format!("cannot hand {} to {user}: {e}", dir.display())))?;
        }
        let cluster = Self { bin, user, dir };
        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"])
            // Only initdb's own final sync of the files: the server keeps fsync at its default.
            .arg("--no-sync");
        run(initdb)?;
        Ok(cluster)
    }

    /// Starts the server on a free port of 127.0.0.1 and returns the port. A free port can be
    /// taken by someone else before the server binds it: a few are tried.
    pub(crate) fn start_on_free_port(&self) -> Result<u16, TestDatabaseError> {
        let mut last_error = error("no port tried");
        for _ in 0..5 {
            let port = free_port()?;
            match self.start(port) {
                Ok(()) => return Ok(port),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Starts the server on `port` of 127.0.0.1 and waits until it accepts connections (after
    /// crash recovery, if it was stopped immediately).
    pub(crate) fn start(&self, port: u16) -> Result<(), TestDatabaseError> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c max_connections=200",
            self.dir.display()
        );
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", PG_CTL_TIMEOUT, "-o"])
            .arg(options)
            .arg("start");
        run(pg_ctl).map(drop).map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            error(format!("{e}\n{log}"))
        })
    }

    /// Stops the server at once, as a crash would: connections are cut, nothing is
    /// checkpointed, and the next start recovers from the WAL.
    pub(crate) fn stop_immediately(&self) -> Result<(), TestDatabaseError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT, "stop"]);
        run(pg_ctl).map(drop)
    }

    /// Deletes the cluster's directory; its server must be stopped.
    pub(crate) fn remove(&self) -> Result<(), TestDatabaseError> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| error(format!("cannot remove {}: {e}", self.dir.display())))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command running the PostgreSQL binary `program` in the cluster's directory, as the
    /// cluster's user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }
}

/// The URL of the `postgres` database of a cluster's server on `port`.
pub(crate) fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Runs `command` and returns its stdout, or an error naming the program and its stderr.
fn run(mut command: Command) -> Result<String, TestDatabaseError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .map_err(|e| error(format!("cannot run {program}: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let args: Vec<_> = command.get_args().map(|arg| arg.to_string_lossy()).collect();
        Err(error(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Directories holding `initdb`, `pg_ctl` and `postgres`, newest major version first (`PATH`
/// before `/usr/lib/postgresql` for the same version).
fn binary_dirs() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<PathBuf> = entries.flatten().map(|entry| entry.path().join("bin")).collect();
        versioned.sort();
        candidates.extend(versioned);
    }
    let complete = |dir: &PathBuf| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    let mut found: Vec<(u32, usize, PathBuf)> = candidates
        .into_iter()
        .filter(complete)
        .enumerate()
        .filter_map(|(order, dir)| {
            let output = Command::new(dir.join("initdb")).arg("--version").output().ok()?;
            // "initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let version = text.split(") ").nth(1)?.split(['.', ' ']).next()?.trim().parse().ok()?;
            Some((version, order, dir))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().map(|(_, _, dir)| dir).collect()
}

/// Whom the servers run as when not this process's user: `postgres` when running as root
/// (PostgreSQL refuses to run as root).
pub(crate) fn server_user() -> Option<&'static str> {
    is_root().then_some("postgres")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

pub(crate) fn id_of(flag: &str, user: &str) -> Result<u32, TestDatabaseError> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| error(format!("cannot run id: {e}")))?;
    String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|_| {
        error(format!(
            "running as root needs an unprivileged `{user}` user to run PostgreSQL"
        ))
    })
}

fn free_port() -> Result<u16, TestDatabaseError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| error(format!("no free port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| error(format!("no free port: {e}")))?
        .port();
    Ok(port)
}

/// Starts a detached shell that waits for this process to exit, then stops the server (if it
/// runs) and deletes `dir`.
fn spawn_watchdog(bin: &Path, dir: &Path, user: Option<&str>) -> Result<(), TestDatabaseError> {
    use std::os::unix::process::CommandExt;

    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
        if [ -f "$3/data/postmaster.pid" ]; then
            if [ -n "$4" ]; then runuser -u "$4" -- "$2/pg_ctl" -D "$3/data" -m immediate stop
            else "$2/pg_ctl" -D "$3/data" -m immediate stop; fi
        fi
        rm -rf "$3"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("es-postgres-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(bin)
        .arg(dir)
        .arg(user.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the tests must not kill the cleanup.
        .process_group(0)
        .spawn()
        .map_err(|e| error(format!("cannot start the cleanup watchdog: {e}")))?;
    Ok(())
}
