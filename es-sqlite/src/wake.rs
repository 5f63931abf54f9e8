//! Wake-ups for projection runners: a watch channel per database file, fired after each append
//! this process commits. Appends of other processes are found by the runner's polling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use es_core::{async_trait, WakeUp};
use tokio::sync::watch;

/// One channel per database file of this process, so that every store opened on the same file
/// (not only a store's clones) wakes the same runners. Entries of files no store has open any
/// more are dropped as new files are opened.
static CHANNELS: LazyLock<Mutex<HashMap<PathBuf, Weak<watch::Sender<u64>>>>> = LazyLock::new(Mutex::default);

/// The channel of the database file at `path`, which exists.
pub(crate) fn channel_for(path: &Path) -> Arc<watch::Sender<u64>> {
    // The same file under another name (relative, through a link) is the same file.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    // The map only holds weak references: a panic cannot leave it inconsistent.
    let mut channels = CHANNELS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(channel) = channels.get(&key).and_then(Weak::upgrade) {
        return channel;
    }
    channels.retain(|_, channel| channel.strong_count() > 0);
    let channel = Arc::new(watch::Sender::new(0));
    channels.insert(key, Arc::downgrade(&channel));
    channel
}

/// Wakes a projection runner when this process appends to the store's file; see
/// [`SqliteStore::wake_up`](crate::SqliteStore::wake_up).
#[derive(Debug)]
pub struct SqliteWakeUp {
    pub(crate) appended: watch::Receiver<u64>,
}

#[async_trait]
impl WakeUp for SqliteWakeUp {
    async fn wait(&mut self) {
        if self.appended.changed().await.is_err() {
            // Every store on the file is gone: nothing will be appended by this process; the
            // runner's poll interval covers other processes.
            std::future::pending::<()>().await;
        }
    }
}
