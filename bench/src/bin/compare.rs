//! `compare --quick|--full [--out bench/reports]`: runs the side-by-side benchmark
//! and writes the report (see `sluice_bench::compare`).
use sluice_bench::compare::{args, procs, run};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, json, mode] = argv.as_slice() {
        if flag == "--render" {
            // compare --render RUN.json quick|full: the report again from the raw JSON.
            let cmd = format!("cargo run --release -p sluice-bench --bin compare -- --{mode} --out bench/reports/");
            match run::rerender(std::path::Path::new(json), &cmd) {
                Ok(p) => eprintln!("compare: report written to {}", p.display()),
                Err(e) => {
                    eprintln!("compare: {e:#}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    procs::install_signal_flag();
    // The command that reproduces this run: every argument as given.
    let cmd = format!(
        "cargo run --release -p sluice-bench --bin compare -- {}",
        argv.join(" ")
    );
    match run::run(args, &cmd) {
        Ok(path) => eprintln!("compare: report written to {}", path.display()),
        Err(e) => {
            eprintln!("compare: {e:#}");
            std::process::exit(1);
        }
    }
}
