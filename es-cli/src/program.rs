//! How the application's binary presents the command line: its name and version, how it is
//! invoked, and how it chooses its store.

/// How the application's binary presents the command line to its operators: the name and
/// version `--version` prints, the usage line, and a section of `--help` on how the binary
/// chooses its store (the options it reads before the command, its environment variables).
/// `--help` always ends with the exit codes ([`Exit`](crate::Exit)).
///
/// Give the same `Program` to [`Program::preflight`] and to [`Cli::program`](crate::Cli::program):
/// help is answered by whichever reads the arguments first. Without one, the command line is
/// `es-cli`, at es-cli's version, with no store section.
///
/// ```
/// use es_cli::Program;
///
/// let program = Program::new("tickets-admin", "2.3.0")
///     .usage("tickets-admin [--store URL] [--json] <COMMAND>")
///     .store_help("Choosing the store:\n  --store URL   before the command; default: $TICKETS_DB");
/// # let _ = program;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Program {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) usage: Option<String>,
    pub(crate) store_help: Option<String>,
}

impl Program {
    /// The binary `name` at `version`: what `--version` prints, and the name in help.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            version: Some(version.into()),
            ..Self::default()
        }
    }

    /// The usage line of the top-level help and of usage errors, e.g.
    /// `es [--db PATH] [--json] <COMMAND>` for a binary that reads options of its own before the
    /// command (by default clap's, which knows only es-cli's options).
    pub fn usage(mut self, usage: impl Into<String>) -> Self {
        self.usage = Some(usage.into());
        self
    }

    /// A section of the top-level `--help`, before the exit codes: how the binary chooses its
    /// store (options, environment variables, defaults, which wins).
    pub fn store_help(mut self, text: impl Into<String>) -> Self {
        self.store_help = Some(text.into());
        self
    }

    /// [`preflight`](crate::preflight), with this program's help and version.
    pub fn preflight<I, T>(&self, args: I) -> crate::Preflight
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        crate::preflight::preflight_with(self, args)
    }

    /// The grammar with this program's name, version, usage and help sections.
    pub(crate) fn command(&self) -> clap::Command {
        let mut command = <crate::args::Args as clap::CommandFactory>::command();
        if let Some(name) = &self.name {
            command = command.name(name.clone());
        }
        if let Some(version) = &self.version {
            command = command.version(version.clone());
        }
        if let Some(usage) = &self.usage {
            command = command.override_usage(usage.clone());
        }
        let mut after = String::new();
        if let Some(store) = &self.store_help {
            after.push_str(store.trim_end());
            after.push_str("\n\n");
        }
        after.push_str(&crate::output::exit_codes_help());
        command.after_help(after)
    }
}
