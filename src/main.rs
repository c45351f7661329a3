//! The `bcproxy` binary: everything lives in the library; see [`bcproxy::cli`].

/// mimalloc: a call allocates and frees small buffers on whichever worker runs it, which the
/// system allocator serialises on its arena locks (see README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bcproxy::cli::main()
}
