//! The `mxgate` binary: the command line from `mxgate-std`, served by the smol runtime.

use std::process::ExitCode;

fn main() -> ExitCode {
    mxgate_std::support::cli::main(mxgate::run)
}
