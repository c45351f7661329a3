//! The `bcproxy` binary: everything lives in the library; see [`bcproxy::cli`].

fn main() -> std::process::ExitCode {
    bcproxy::cli::main()
}
