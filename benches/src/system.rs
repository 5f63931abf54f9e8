//! What the benchmark reads from the machine: peak memory, CPU, load, the server's settings, and
//! the SQLite library, file system and settings.

use std::path::Path;

use es_sqlite::{SqliteOptions, SqliteStore};
use sqlx::PgPool;

use crate::BenchResult;

/// This process's peak resident set size (`VmHWM` in `/proc/self/status`), in KiB.
pub fn peak_rss_kib() -> BenchResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    let kib = line.trim().trim_end_matches("kB").trim();
    Ok(kib.parse()?)
}

/// The machine the run is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// The CPU model (`model name` in `/proc/cpuinfo`).
    pub cpu_model: String,
    /// Total memory, from `/proc/meminfo`.
    pub memory: String,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description; parts that cannot be read say `unknown`.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().to_owned())
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = field(&meminfo, "MemTotal")
            .and_then(|total| total.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
            );
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".to_owned()),
            memory,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |release| release.trim().to_owned()),
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The 1-minute load average, if it can be read.
pub fn load_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The PostgreSQL server's version and the settings that matter for these figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// `SELECT version()`.
    pub version: String,
    /// `(name, setting)` for each setting shown.
    pub settings: Vec<(String, String)>,
}

/// The settings reported with the figures.
const SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
    "work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "jit",
];

impl Server {
    /// Asks the server.
    pub async fn read(pool: &PgPool) -> BenchResult<Self> {
        let version: String = sqlx::query_scalar("SELECT version()").fetch_one(pool).await?;
        let mut settings = Vec::new();
        for name in SETTINGS {
            let value: String = sqlx::query_scalar("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(pool)
                .await?;
            settings.push(((*name).to_owned(), value));
        }
        Ok(Self { version, settings })
    }

    /// The value of setting `name`, if read.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(setting, _)| setting == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The SQLite side of a run: the library both sides link, where the files were and on what
/// file system, and the settings es-sqlite's default options give a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteFacts {
    /// The SQLite library's version (`sqlite3_libversion`).
    pub version: String,
    /// The directory of the run's files.
    pub dir: String,
    /// The file system the directory is on, from `/proc/mounts`.
    pub file_system: String,
    /// `(pragma, value)`, as SQLite reports them on a connection of an es-sqlite store opened
    /// with the default options. Every SQLite run also checks that both sides report the same.
    pub settings: Vec<(String, String)>,
}

impl SqliteFacts {
    /// Opens a store on a scratch file in `dir` to read the settings back, then removes it.
    pub async fn read(dir: &Path) -> BenchResult<Self> {
        let path = dir.join("settings.db");
        let store = SqliteStore::open_with(&path, SqliteOptions::default()).await?;
        let settings = store.write(crate::raw_sqlite::settings_of).await?;
        drop(store);
        crate::subject::remove_database_files(&path)?;
        Ok(Self {
            version: es_sqlite::rusqlite::version().to_owned(),
            dir: dir.display().to_string(),
            file_system: file_system(dir),
            settings: settings
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }

    /// The value of pragma `name`, if read.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(setting, _)| setting == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The file system `path` is on: type, device, mount point and options, from the entry of
/// `/proc/mounts` with the longest mount point above it; `unknown` when it cannot be read.
pub fn file_system(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind, options) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount).then_some((device, mount, kind, options))
        })
        // The last of equally long mount points is the one mounted on top.
        .max_by_key(|(_, mount, ..)| mount.len())
        .map_or_else(
            || "unknown".to_owned(),
            |(device, mount, kind, options)| format!("{kind} (`{device}` on `{mount}`, `{options}`)"),
        )
}
