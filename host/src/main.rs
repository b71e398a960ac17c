//! The `sensorae` command line: parses flags and hands over to the library.

use clap::Parser;
use sensorae_host::commands::{Cli, run};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
