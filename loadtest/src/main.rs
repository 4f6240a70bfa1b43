fn main() {
    eprintln!("sluice-load: not built yet (issue 4)");
    std::process::exit(2);
}
