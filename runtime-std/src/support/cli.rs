//! The `mxgate` command line. Both runtimes call [`main`] so that `run`, `check` and
//! `--version` behave identically whichever I/O engine is underneath.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mxgate_core::Config;

use super::{config, logging};

/// `mxgate`: with no subcommand, runs the embedded development configuration.
#[derive(Debug, Parser)]
#[command(
    name = "mxgate",
    version,
    about = "A reverse proxy for Matrix homeservers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file (TOML); without it, the embedded development default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// Configuration file (TOML); without it, the embedded development default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Parses the command line and does what it says; `serve` runs the proxy until shutdown.
///
/// Exit codes: 0 on success (and after a graceful shutdown), 1 when the configuration is
/// invalid or the proxy failed to start or run, 2 for command-line usage errors (clap).
pub fn main(serve: impl FnOnce(Arc<Config>) -> anyhow::Result<()>) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => match config::load(config.as_deref()) {
            Ok(cfg) => {
                print!("{}", mxgate_core::config::render_effective(&cfg));
                if let Some(acme) = &cfg.acme {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    print!("{}", super::acme_store::describe(acme, now));
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("mxgate: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run { config }) => run(config, serve),
        None => run(None, serve),
    }
}

fn run(path: Option<PathBuf>, serve: impl FnOnce(Arc<Config>) -> anyhow::Result<()>) -> ExitCode {
    logging::init();
    let cfg = match config::load(path.as_deref()) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("mxgate: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if path.is_none() {
        tracing::warn!("no --config given: running the embedded development configuration");
    }
    match serve(Arc::new(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["mxgate", "check", "--config", "a.toml"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Check { config: Some(p) }) if p == std::path::Path::new("a.toml"))
        );
        let cli = Cli::try_parse_from(["mxgate"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["mxgate", "run", "-c", "b.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Run { config: Some(_) })
        ));
        assert!(Cli::try_parse_from(["mxgate", "frobnicate"]).is_err());
    }
}
