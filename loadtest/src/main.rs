//! `sluice-load`: the command-line front-end; all the work is in the `sluice_loadtest` library.
use std::process::ExitCode;

fn main() -> ExitCode {
    sluice_loadtest::cli::main(std::env::args_os().collect())
}
