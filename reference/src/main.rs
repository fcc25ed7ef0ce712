fn main() -> std::process::ExitCode {
    shipshape::cli::run(std::env::args_os().collect())
}
