//! `hallmark`: the webhook server and its offline tools. Thin: parse the command line,
//! set up logging, hand over to a subcommand.

use clap::Parser;
use hallmark::cli::{Cli, run};

fn main() {
    let cli = Cli::parse();
    std::process::exit(run(cli));
}
