//! Commands: one file per subcommand, each wiring the stages together for its job (`run` is the
//! daemon: collect -> model -> alerts -> notify and serve), with the command line in `cli.rs`.
//!
//! The only folder that may import every stage; no stage imports it.
pub mod check;
pub mod check_config;
pub mod cli;
pub mod completions;
pub mod events;
pub mod history;
pub mod notify;
pub mod notify_deliver;
pub mod report;
pub mod rules;
pub mod run;
pub mod stat;
