//! Loading, attaching and reading the kernel programs.
pub mod btf;
pub mod maps;
pub mod probes;
pub mod request_events;
pub mod selection;
pub mod target_index;
