//! The `mxgate` command line. Both runtimes call [`main`] so that `run`, `check` and
//! `--version` behave identically whichever I/O engine is underneath.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
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
        /// Print nothing when the file is valid (errors are still printed).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate a configuration file exactly as `check` does, then ask the running mxgate
    /// to apply it (SIGHUP). Nothing is signalled when the file is invalid.
    Reload {
        /// Configuration file (TOML) the running mxgate was started with.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Process id of the running mxgate.
        #[arg(
            long,
            value_name = "PID",
            conflicts_with = "pid_file",
            required_unless_present = "pid_file"
        )]
        pid: Option<u32>,
        /// File holding the process id of the running mxgate.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
}

/// Parses the command line and does what it says; `serve` runs the proxy until shutdown,
/// given the configuration and the file it came from (reloaded on SIGHUP).
///
/// Exit codes: 0 on success (and after a graceful shutdown), 1 when the configuration is
/// invalid or the proxy failed to start or run, 2 for command-line usage errors (clap).
pub fn main(serve: impl FnOnce(Arc<Config>, Option<PathBuf>) -> anyhow::Result<()>) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config, quiet }) => match config::load(config.as_deref()) {
            Ok(cfg) => {
                if !quiet {
                    print!("{}", mxgate_core::config::render_effective(&cfg));
                    if let Some(acme) = &cfg.acme {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        print!("{}", super::acme_store::describe(acme, now));
                    }
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("mxgate: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Reload {
            config,
            pid,
            pid_file,
        }) => match reload(&config, pid, pid_file.as_deref()) {
            Ok(pid) => {
                eprintln!(
                    "mxgate: {} is valid; asked process {pid} to apply it",
                    config.display()
                );
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

/// `mxgate reload`: validates `path`, then sends SIGHUP to the process; returns its id.
fn reload(path: &Path, pid: Option<u32>, pid_file: Option<&Path>) -> anyhow::Result<u32> {
    config::load(Some(path))?;
    let pid = match (pid, pid_file) {
        (Some(pid), _) => pid,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the pid file {}", file.display()))?;
            text.trim().parse().with_context(|| {
                format!("{}: not a process id: {:?}", file.display(), text.trim())
            })?
        }
        (None, None) => anyhow::bail!("give --pid or --pid-file"),
    };
    let target = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .with_context(|| format!("not a process id: {pid}"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(target, libc::SIGHUP) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(err).with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(pid)
}

fn run(
    path: Option<PathBuf>,
    serve: impl FnOnce(Arc<Config>, Option<PathBuf>) -> anyhow::Result<()>,
) -> ExitCode {
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
    match serve(Arc::new(cfg), path) {
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
            matches!(cli.command, Some(Command::Check { config: Some(p), quiet: false }) if p == std::path::Path::new("a.toml"))
        );
        let cli = Cli::try_parse_from(["mxgate"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["mxgate", "run", "-c", "b.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Run { config: Some(_) })
        ));
        assert!(Cli::try_parse_from(["mxgate", "frobnicate"]).is_err());
        let cli = Cli::try_parse_from(["mxgate", "check", "-q"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Check { quiet: true, .. })
        ));
        let cli = Cli::try_parse_from(["mxgate", "reload", "-c", "a.toml", "--pid", "7"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Reload { pid: Some(7), .. })
        ));
        // A target is required, and only one.
        assert!(Cli::try_parse_from(["mxgate", "reload", "-c", "a.toml"]).is_err());
        let both = [
            "mxgate",
            "reload",
            "-c",
            "a",
            "--pid",
            "7",
            "--pid-file",
            "p",
        ];
        assert!(Cli::try_parse_from(both).is_err());
    }
}
