//! The `karst` command-line tools. Each subcommand lives in its own module with its own args.

pub mod node;
