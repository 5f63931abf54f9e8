//! Ctrl-C for the commands that run until it (`log --follow`, `serve`) or may take long
//! (`rebuild`).
//!
//! The handler is installed when such a command starts, before it prints anything: a Ctrl-C at
//! any moment after then ends the command as documented (exit 130, committed work consistent),
//! instead of the signal's default action killing the process. Once installed, it stays for
//! the life of the process, as the operating system's handlers do.

/// Ctrl-C, listened for from the moment it is installed.
pub(crate) struct Interrupt {
    /// `None` when no handler could be installed (no signal support in the runtime): then
    /// nothing interrupts, and the signal's default action applies.
    listener: Option<Listener>,
}

#[cfg(unix)]
type Listener = tokio::signal::unix::Signal;
#[cfg(windows)]
type Listener = tokio::signal::windows::CtrlC;
#[cfg(not(any(unix, windows)))]
type Listener = std::convert::Infallible;

impl Interrupt {
    /// Installs the handler now (within a Tokio runtime with signals enabled).
    pub(crate) fn install() -> Self {
        #[cfg(unix)]
        let listener = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        #[cfg(windows)]
        let listener = tokio::signal::windows::ctrl_c().ok();
        #[cfg(not(any(unix, windows)))]
        let listener = None;
        Self { listener }
    }

    /// No handler: Ctrl-C keeps its default action, and [`Interrupt::recv`] never resolves.
    pub(crate) fn none() -> Self {
        Self { listener: None }
    }

    /// Resolves at the next Ctrl-C; never, when no handler is installed.
    pub(crate) async fn recv(&mut self) {
        #[cfg(any(unix, windows))]
        if let Some(listener) = &mut self.listener {
            // `None`: the runtime is shutting down and no signal will come.
            if listener.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
