//! `monitor events`: the daemon's recent alert transitions and CPU spikes, from `/api/events`.
use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context as _;

use crate::serve::events;

pub fn run(listen: SocketAddr, json: bool) -> anyhow::Result<ExitCode> {
    let url = format!("http://{listen}/api/events");
    let body = ureq::get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| {
            format!("fetching {url} (is `monitor run` listening there? see --listen)")
        })?;
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&body).with_context(|| format!("parsing {url}"))?;
    if events.is_empty() {
        println!("no events yet");
    }
    for event in &events {
        println!("{}", events::render(event));
    }
    Ok(ExitCode::SUCCESS)
}
