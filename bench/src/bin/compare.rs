//! `compare --quick|--full [--out bench/reports]`: runs the side-by-side benchmark
//! and writes the report (see `sluice_bench::compare`).
use sluice_bench::compare::{args, procs, run};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    procs::install_signal_flag();
    let cmd = format!(
        "cargo run --release -p sluice-bench --bin compare -- --{} --out {}",
        args.settings.mode,
        args.out.display()
    );
    match run::run(args, &cmd) {
        Ok(path) => eprintln!("compare: report written to {}", path.display()),
        Err(e) => {
            eprintln!("compare: {e:#}");
            std::process::exit(1);
        }
    }
}
