//! The `mxgate-std` binary: the command line from `support::cli` (same subcommands, same
//! `--config` file, same embedded default), served by the std-threads runtime.

use std::process::ExitCode;

fn main() -> ExitCode {
    mxgate_std::support::cli::main(mxgate_std::threads::run)
}
