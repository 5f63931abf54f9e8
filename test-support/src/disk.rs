//! [`SmallDisk`]: a small file system a test can fill, for running out of space.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cluster::{id_of, server_user};
use crate::{error, TestDatabaseError};

/// A `tmpfs` of a few megabytes mounted on a fresh temporary directory, owned by the user the
/// [`TestServer`](crate::TestServer)s run as, so that a server can put a tablespace on it and
/// run out of space. Mounting needs root (and a machine that allows it, which containers often
/// do not): [`SmallDisk::mount`] says why when it cannot, for the test to skip or simulate.
///
/// Dropping it unmounts it and removes the directory; a watchdog process does the same if the
/// test process dies first.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use es_test_support::SmallDisk;
///
/// let disk = SmallDisk::mount(8 << 20)?; // 8 MiB
/// println!("CREATE TABLESPACE small LOCATION '{}'", disk.path().display());
/// disk.resize(16 << 20)?; // room again
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a `tmpfs` of `bytes` bytes, owned by the test servers' user (mode 0700).
    pub fn mount(bytes: u64) -> Result<Self, TestDatabaseError> {
        let dir = std::env::temp_dir().join(format!("es-small-disk-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir(&dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        let owner = match server_user() {
            Some(user) => format!(",uid={},gid={}", id_of("-u", user)?, id_of("-g", user)?),
            None => String::new(),
        };
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700{owner}"), "tmpfs"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output();
        match mounted {
            Ok(output) if output.status.success() => {}
            outcome => {
                let _ = std::fs::remove_dir(&dir);
                let why = match outcome {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(error(format!(
                    "cannot mount a tmpfs (needs root, and a machine that allows it): {why}"
                )));
            }
        }
        let disk = Self { dir };
        disk.watch()?;
        Ok(disk)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Changes its size to `bytes` (`mount -o remount`): more room, or less.
    pub fn resize(&self, bytes: u64) -> Result<(), TestDatabaseError> {
        let output = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| error(format!("cannot run mount: {e}")))?;
        match output.status.success() {
            true => Ok(()),
            false => Err(error(format!(
                "cannot resize {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }

    /// Starts a detached shell that unmounts the disk once this process has exited.
    fn watch(&self) -> Result<(), TestDatabaseError> {
        use std::os::unix::process::CommandExt;

        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
            if mountpoint -q "$2"; then umount -l "$2"; fi
            rmdir "$2" 2>/dev/null
        "#;
        Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("es-small-disk-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| error(format!("cannot start the small disk's watchdog: {e}")))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server that still has a file open there must not keep the test from ending.
        let unmounted = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match unmounted {
            Ok(output) if output.status.success() => {
                if let Err(e) = std::fs::remove_dir(&self.dir) {
                    tracing::warn!(%e, "cannot remove a small disk's directory; the watchdog will");
                }
            }
            _ => tracing::warn!("cannot unmount a small disk; the watchdog will at exit"),
        }
    }
}
