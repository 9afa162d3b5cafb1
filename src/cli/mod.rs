//! The `karst` command-line tools. Each subcommand lives in its own module with its own args.

pub mod consume;
pub mod groups;
pub mod node;
pub mod perf;
pub mod produce;
pub mod topics;
