//! The command line every binary shares: `<binary> [COMMAND [ARGS…]]`, with
//! `serve` as the default command, and one way to end: the error chain on
//! stderr and a non-zero exit code.

use std::process::ExitCode;

/// The command a binary was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The first argument, `serve` when there is none.
    pub name: String,
    /// The arguments after it.
    pub args: Vec<String>,
}

impl Command {
    /// The command of this process.
    pub fn from_process() -> Self {
        Self::from_args(std::env::args().skip(1))
    }

    /// The command of an explicit argument list (without the binary's name).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Self {
        let mut args = args.into_iter();
        Self {
            name: args.next().unwrap_or_else(|| "serve".to_owned()),
            args: args.collect(),
        }
    }

    /// The error for a command this binary does not know, listing the known ones.
    pub fn unknown(&self, known: &str) -> anyhow::Error {
        anyhow::anyhow!("unknown command {:?}; use {known}", self.name)
    }
}

/// How a binary ends: success, or `<binary>: error: <chain>` and failure.
pub fn exit(binary: &str, outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_command() {
        assert_eq!(Command::from_args(Vec::new()).name, "serve");
        let health = Command::from_args(["health".to_owned(), "127.0.0.1:1".to_owned()]);
        assert_eq!(health.name, "health");
        assert_eq!(health.args, ["127.0.0.1:1"]);
    }
}
