//! From kernel events to requests and their CPU: the HTTP/1 state of each connection, and which
//! request each thread's CPU belongs to.
//!
//! Attribution rules (README "Request types" says where they are exact and where they estimate):
//! - CPU a thread spends up to a write on a connection belongs to the request that write
//!   answers (a status line answers the oldest request still waiting; body writes continue the
//!   one being answered). This is exact for handlers that run on the event-loop thread, however
//!   many requests it interleaves: their work ends in their response.
//! - CPU after a thread's response write up to its next read belongs to that response's request
//!   (completion callbacks, keep-alive timers); otherwise CPU up to a read that carries request
//!   lines belongs to the first of them (waking up for it, reading it), and up to another read,
//!   to the request the connection is on.
//! - A thread that reads requests and then wakes an idle thread of its process hands it the
//!   oldest request it read that has neither been handed on nor answered: that is how a request
//!   reaches a thread pool (FastAPI's `def` endpoints, anyio's workers). The woken thread's CPU
//!   is that request's until it is handed another one. A thread is idle when the request it was
//!   handed has been answered (or it never had one), so the wakeups of a busy pool (the GIL
//!   passed between workers) hand nothing.
//! - The rest (a thread that never touches a request, CPU before the first one) is unattributed;
//!   the exporter reports it as the target's on-CPU time minus what the routes got, so the two
//!   add up.
//!
//! A request ends with the last write of its response, known when the next response starts, the
//! connection reads another request or closes, or no write came for RESPONSE_QUIET.
use std::collections::{HashMap, VecDeque};

use super::{
    event::{Event, Io},
    http_line::{LineParse, Method, parse_request_line, parse_status_line, request_lines},
    ledger::Ledger,
    route_table::{Route, RouteTable},
    thread_cpu::{Owner, ThreadCpu},
};

/// A response with no write for this long is complete (keep-alive connections stay open).
pub const RESPONSE_QUIET_NS: u64 = 1_000_000_000;
/// A request line split across reads is waited for up to this many bytes.
const PARTIAL_LINE_MAX: usize = 8 * 1024;
/// Requests waiting for their response on one connection, at most.
const MAX_WAITING: usize = 256;
/// State of a thread or connection unused for this long is dropped.
const IDLE_STATE_NS: u64 = 120 * 1_000_000_000;

/// The routes and totals of one target.
pub struct TargetRequests {
    pub table: RouteTable,
    pub ledger: Ledger,
}

#[derive(Default)]
struct Connection {
    /// The start of a request line whose end is in a later read.
    partial: Vec<u8>,
    /// Requests read and not answered yet, oldest first (pipelining keeps them in order).
    waiting: VecDeque<u64>,
    /// The request whose response is being written.
    answering: Option<u64>,
    last_ns: u64,
}

struct Live {
    route: Route,
    start_ns: u64,
    last_write_ns: u64,
    /// The final status once its status line was written.
    status: Option<u16>,
    handed: bool,
}

#[derive(Default)]
struct Thread {
    cpu: ThreadCpu,
    /// The request this thread works for (handed to it, or the last one it read).
    ctx: Option<(u64, Route)>,
    /// Requests this thread read that may still be handed to another thread.
    fresh: VecDeque<u64>,
    /// The request of this thread's last response write, until it reads again.
    answered: Owner,
}

#[derive(Default)]
struct Process {
    slot: usize,
    connections: HashMap<u32, Connection>,
    threads: HashMap<u32, Thread>,
    live: HashMap<u64, Live>,
}

pub struct Tracker {
    targets: Vec<TargetRequests>,
    processes: HashMap<u32, Process>,
    next_id: u64,
    /// Records that did not decode (a kernel object from another version).
    pub undecodable: u64,
    /// Events the kernel's ring buffer had no room for (set by the reader).
    pub events_lost: u64,
    /// Processes seen for the first time since the last `take_new_processes`.
    new_processes: Vec<u32>,
}

impl Tracker {
    /// One entry per target slot.
    pub fn new(targets: Vec<TargetRequests>) -> Self {
        Self {
            targets,
            processes: HashMap::new(),
            next_id: 1,
            undecodable: 0,
            events_lost: 0,
            new_processes: Vec::new(),
        }
    }

    pub fn target(&self, slot: usize) -> Option<&TargetRequests> {
        self.targets.get(slot)
    }

    /// Handles one ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) {
        match Event::decode(bytes) {
            Some(e) => self.event(e),
            None => self.undecodable += 1,
        }
    }

    pub fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Read { io, data } => self.read(io, data),
            Event::Write { io, data } => self.write(io, data),
            Event::Close { io } => self.close(io),
            Event::Slice {
                tgid,
                tid,
                start_ns,
                end_ns,
            } => {
                let Some(p) = self.processes.get_mut(&tgid) else {
                    return;
                };
                let slot = p.slot;
                let th = p.threads.entry(tid).or_default();
                if let Some((owner, ns)) = th.cpu.slice(start_ns, end_ns) {
                    book(&mut self.targets, slot, &owner, ns);
                }
            }
            Event::Wake {
                tgid,
                tid,
                wakee,
                ts_ns,
            } => self.wake(tgid, tid, wakee, ts_ns),
        }
    }

    fn read(&mut self, io: Io, data: &[u8]) {
        let id_base = self.next_id;
        let Some(p) = process(
            &mut self.processes,
            &mut self.new_processes,
            self.targets.len(),
            &io,
        ) else {
            return;
        };
        let slot = p.slot;
        let conn = p.connections.entry(io.fd).or_default();
        conn.last_ns = io.ts_ns;
        let whole = data.len() as u64 == io.len;
        let joined;
        let buf: &[u8] = if conn.partial.is_empty() {
            data
        } else {
            joined = [conn.partial.as_slice(), data].concat();
            &joined
        };
        let lines: Vec<(Method, String, bool)> = request_lines(buf)
            .map(|l| {
                let own = is_own_fetch(buf, l.path);
                (l.method, l.path.to_owned(), own)
            })
            .collect();
        let mut new = Vec::with_capacity(lines.len());
        let mut finished = Vec::new();
        if lines.is_empty() {
            let keep = whole
                && buf.len() < PARTIAL_LINE_MAX
                && matches!(parse_request_line(buf), LineParse::Incomplete)
                && !buf.is_empty();
            conn.partial = if keep { buf.to_vec() } else { Vec::new() };
        } else {
            conn.partial.clear();
            // A new request on a connection that was answering: that response is complete.
            finished.extend(conn.answering.take());
            let table = &mut self.targets[slot].table;
            for (i, (method, path, own)) in lines.into_iter().enumerate() {
                let id = id_base + i as u64;
                let route = if own {
                    Route {
                        method,
                        template: OWN_FETCH.into(),
                    }
                } else {
                    table.route(method, &path)
                };
                conn.waiting.push_back(id);
                new.push((id, route));
                // Pipelining deeper than any client goes: what is left is state to drop.
                if conn.waiting.len() > MAX_WAITING
                    && let Some(oldest) = conn.waiting.pop_front()
                {
                    finished.push(oldest);
                }
            }
        }
        self.next_id += new.len() as u64;
        let conn_request = conn.answering.or(conn.waiting.front().copied());
        for (id, route) in &new {
            p.live.insert(
                *id,
                Live {
                    route: route.clone(),
                    start_ns: io.ts_ns,
                    last_write_ns: io.ts_ns,
                    status: None,
                    handed: false,
                },
            );
        }
        let th = p.threads.entry(io.tid).or_default();
        // Since its last response write the thread finished that response (callbacks, timers,
        // the next poll): that request's cost, not the next one's.
        let answered = th.answered.take();
        let owner: Owner = answered.or_else(|| match new.first() {
            Some((_, route)) => Some(route.clone()),
            None => conn_request
                .and_then(|id| p.live.get(&id))
                .map(|l| l.route.clone()),
        });
        let ns = th
            .cpu
            .checkpoint(io.ts_ns, io.slice_start_ns, owner.clone());
        if let Some((id, route)) = new.last() {
            th.ctx = Some((*id, route.clone()));
            th.fresh.extend(new.iter().map(|(id, _)| *id));
            if th.fresh.len() > 64 {
                let live = &p.live;
                th.fresh.retain(|id| {
                    live.get(id)
                        .is_some_and(|l| !l.handed && l.status.is_none())
                });
            }
        }
        book(&mut self.targets, slot, &owner, ns);
        for id in finished {
            finish(&mut self.targets, p, id);
        }
    }

    fn write(&mut self, io: Io, data: &[u8]) {
        let Some(p) = process(
            &mut self.processes,
            &mut self.new_processes,
            self.targets.len(),
            &io,
        ) else {
            return;
        };
        let slot = p.slot;
        let conn = p.connections.entry(io.fd).or_default();
        conn.last_ns = io.ts_ns;
        let mut finished = None;
        let answers = match parse_status_line(data) {
            // Interim responses (100 Continue, 103 Early Hints) do not end the wait; 101
            // Switching Protocols is the last HTTP/1 response on the connection.
            Some(status) if (100..200).contains(&status) && status != 101 => {
                conn.waiting.front().copied()
            }
            Some(status) => {
                finished = conn.answering.take();
                let id = conn.waiting.pop_front();
                if let Some(l) = id.and_then(|id| p.live.get_mut(&id)) {
                    l.status = Some(status);
                }
                conn.answering = id;
                id
            }
            None => conn.answering.or(conn.waiting.front().copied()),
        };
        let owner: Owner = match answers.and_then(|id| p.live.get_mut(&id)) {
            Some(l) => {
                l.last_write_ns = io.ts_ns;
                Some(l.route.clone())
            }
            None => None,
        };
        let th = p.threads.entry(io.tid).or_default();
        if owner.is_some() {
            th.answered = owner.clone();
        }
        let owner = owner.or_else(|| th.ctx.as_ref().map(|(_, r)| r.clone()));
        let ns = th
            .cpu
            .checkpoint(io.ts_ns, io.slice_start_ns, owner.clone());
        book(&mut self.targets, slot, &owner, ns);
        if let Some(id) = finished {
            finish(&mut self.targets, p, id);
        }
    }

    fn close(&mut self, io: Io) {
        let Some(p) = process(
            &mut self.processes,
            &mut self.new_processes,
            self.targets.len(),
            &io,
        ) else {
            return;
        };
        let slot = p.slot;
        let Some(conn) = p.connections.remove(&io.fd) else {
            return;
        };
        let owner: Owner = conn
            .answering
            .or(conn.waiting.front().copied())
            .and_then(|id| p.live.get(&id))
            .map(|l| l.route.clone());
        let th = p.threads.entry(io.tid).or_default();
        let ns = th
            .cpu
            .checkpoint(io.ts_ns, io.slice_start_ns, owner.clone());
        book(&mut self.targets, slot, &owner, ns);
        for id in conn.answering.into_iter().chain(conn.waiting) {
            finish(&mut self.targets, p, id);
        }
    }

    fn wake(&mut self, tgid: u32, tid: u32, wakee: u32, ts_ns: u64) {
        let Some(p) = self.processes.get_mut(&tgid) else {
            return;
        };
        let slot = p.slot;
        let idle = match p.threads.get(&wakee).and_then(|t| t.ctx.as_ref()) {
            None => true,
            Some((id, _)) => p.live.get(id).is_none_or(|l| l.status.is_some()),
        };
        if !idle {
            return;
        }
        let Some(waker) = p.threads.get_mut(&tid) else {
            return;
        };
        let handed = loop {
            let Some(id) = waker.fresh.pop_front() else {
                return;
            };
            if let Some(l) = p.live.get_mut(&id)
                && !l.handed
                && l.status.is_none()
            {
                l.handed = true;
                break (id, l.route.clone());
            }
        };
        let th = p.threads.entry(wakee).or_default();
        let before: Owner = th.ctx.as_ref().map(|(_, r)| r.clone());
        let ns = th.cpu.checkpoint(ts_ns, 0, before.clone());
        th.ctx = Some(handed);
        book(&mut self.targets, slot, &before, ns);
    }

    /// Ends responses that went quiet, books the CPU of threads that went quiet to their
    /// request, and drops state unused for long. `now_ns` is CLOCK_MONOTONIC (the kernel's
    /// bpf_ktime_get_ns).
    pub fn tick(&mut self, now_ns: u64) {
        for p in self.processes.values_mut() {
            let slot = p.slot;
            let mut quiet = Vec::new();
            for conn in p.connections.values_mut() {
                if let Some(id) = conn.answering
                    && p.live
                        .get(&id)
                        .is_none_or(|l| l.last_write_ns + RESPONSE_QUIET_NS < now_ns)
                {
                    conn.answering = None;
                    quiet.push(id);
                }
                // Requests never answered on a connection silent for long (its close unseen:
                // close_range, an fd passed away): ended without a response, so neither their
                // state nor a later connection on the same fd inherits them.
                if conn.last_ns + IDLE_STATE_NS < now_ns {
                    quiet.extend(conn.waiting.drain(..));
                }
            }
            for id in quiet {
                finish(&mut self.targets, p, id);
            }
            p.connections
                .retain(|_, c| c.last_ns + IDLE_STATE_NS > now_ns || c.answering.is_some());
            for th in p.threads.values_mut() {
                if th.cpu.last_ns() + RESPONSE_QUIET_NS < now_ns {
                    let owner = th.ctx.as_ref().map(|(_, r)| r.clone());
                    let ns = th.cpu.take_pending();
                    book(&mut self.targets, slot, &owner, ns);
                }
            }
            // A thread idle for long is likely gone (threads come and go); its CPU was booked
            // above, and if it comes back it starts afresh.
            p.threads
                .retain(|_, t| t.cpu.last_ns() + IDLE_STATE_NS > now_ns);
        }
    }

    /// Processes that served their first request since the last call (a worker that started or
    /// was recycled: its routes may have changed).
    pub fn take_new_processes(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.new_processes)
    }

    pub fn target_mut(&mut self, slot: usize) -> Option<&mut TargetRequests> {
        self.targets.get_mut(slot)
    }

    /// Forgets processes that are gone (`alive` says which are still there); what they served
    /// stays in the totals.
    pub fn retain_processes(&mut self, alive: impl Fn(u32) -> bool) {
        self.processes.retain(|&tgid, _| alive(tgid));
    }
}

/// The query monitor's own OpenAPI fetch carries, so that request counts under no route.
pub const OWN_FETCH_QUERY: &str = "monitor_openapi_fetch=1";
/// The template of monitor's own requests: the ledger keeps nothing of them.
pub const OWN_FETCH: &str = "";

/// Whether the request line whose path is `path` (a slice of `buf`) is monitor's own fetch.
fn is_own_fetch(buf: &[u8], path: &str) -> bool {
    let start = (path.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let Some(after) = start.checked_add(path.len()).filter(|&a| a <= buf.len()) else {
        return false;
    };
    let rest = &buf[after..];
    let target_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    rest[..target_end]
        .windows(OWN_FETCH_QUERY.len())
        .any(|w| w == OWN_FETCH_QUERY.as_bytes())
}

/// The state of the process `io` is from (None for a slot this daemon does not have).
fn process<'a>(
    processes: &'a mut HashMap<u32, Process>,
    new_processes: &mut Vec<u32>,
    slots: usize,
    io: &Io,
) -> Option<&'a mut Process> {
    let slot = usize::from(io.slot);
    if slot >= slots {
        return None;
    }
    if !processes.contains_key(&io.tgid) {
        new_processes.push(io.tgid);
    }
    let p = processes.entry(io.tgid).or_default();
    p.slot = slot;
    Some(p)
}

fn book(targets: &mut [TargetRequests], slot: usize, owner: &Owner, ns: u64) {
    if let (Some(route), Some(t)) = (owner, targets.get_mut(slot)) {
        t.ledger.add_cpu(route, ns);
    }
}

fn finish(targets: &mut [TargetRequests], p: &mut Process, id: u64) {
    let Some(l) = p.live.remove(&id) else { return };
    let Some(t) = targets.get_mut(p.slot) else {
        return;
    };
    let duration = l.last_write_ns.saturating_sub(l.start_ns) as f64 / 1e9;
    t.ledger
        .finish(&l.route, l.status.unwrap_or(0), l.last_write_ns, duration);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{event::Io, http_line::Method};

    const P: u32 = 100;
    const LOOP: u32 = 100;
    const WORKER: u32 = 101;

    fn tracker() -> Tracker {
        Tracker::new(vec![TargetRequests {
            table: RouteTable::new(&["/a/{x}".to_owned(), "/b/{x}".to_owned()], 10).unwrap(),
            ledger: Ledger::default(),
        }])
    }

    fn io(tid: u32, fd: u32, ts: u64, slice_start: u64, len: usize) -> Io {
        Io {
            tgid: P,
            tid,
            slot: 0,
            fd,
            ts_ns: ts,
            slice_start_ns: slice_start,
            len: len as u64,
        }
    }

    fn read(t: &mut Tracker, tid: u32, fd: u32, ts: u64, start: u64, data: &[u8]) {
        t.event(Event::Read {
            io: io(tid, fd, ts, start, data.len()),
            data,
        });
    }

    fn write(t: &mut Tracker, tid: u32, fd: u32, ts: u64, start: u64, data: &[u8]) {
        t.event(Event::Write {
            io: io(tid, fd, ts, start, data.len()),
            data,
        });
    }

    fn slice(t: &mut Tracker, tid: u32, start: u64, end: u64) {
        t.event(Event::Slice {
            tgid: P,
            tid,
            start_ns: start,
            end_ns: end,
        });
    }

    fn cpu(t: &Tracker, template: &str) -> u64 {
        let route = Route {
            method: Method::Get,
            template: template.into(),
        };
        t.target(0)
            .unwrap()
            .ledger
            .routes
            .get(&route)
            .map_or(0, |s| s.cpu_ns)
    }

    fn count(t: &Tracker, template: &str) -> u64 {
        let route = Route {
            method: Method::Get,
            template: template.into(),
        };
        t.target(0)
            .unwrap()
            .ledger
            .routes
            .get(&route)
            .map_or(0, |s| s.count())
    }

    #[test]
    fn an_event_loop_interleaving_two_requests_books_each_its_own_work() {
        let mut t = tracker();
        // One slice 0..1000 on the loop thread: reads a (fd 5) and b (fd 6), runs a's handler
        // for 400, writes a's response, runs b's for 300, writes b's.
        read(
            &mut t,
            LOOP,
            5,
            100,
            1,
            b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        read(
            &mut t,
            LOOP,
            6,
            120,
            1,
            b"GET /b/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        write(&mut t, LOOP, 5, 520, 1, b"HTTP/1.1 200 OK\r\n");
        write(&mut t, LOOP, 6, 820, 1, b"HTTP/1.1 200 OK\r\n");
        slice(&mut t, LOOP, 1, 1000);
        assert_eq!(cpu(&t, "/a/{x}"), 99 + 400);
        assert_eq!(cpu(&t, "/b/{x}"), 20 + 300);
        // Both end when the connection reads its next request or goes quiet.
        t.tick(820 + RESPONSE_QUIET_NS + 1);
        assert_eq!((count(&t, "/a/{x}"), count(&t, "/b/{x}")), (1, 1));
    }

    #[test]
    fn a_request_handed_to_an_idle_worker_gets_the_workers_cpu() {
        let mut t = tracker();
        read(&mut t, LOOP, 5, 100, 90, b"GET /a/1 HTTP/1.1\r\n\r\n");
        // The loop wakes the worker, which runs 200..900 (its old work before 150 is nobody's).
        t.event(Event::Wake {
            tgid: P,
            tid: LOOP,
            wakee: WORKER,
            ts_ns: 150,
        });
        slice(&mut t, LOOP, 90, 160);
        slice(&mut t, WORKER, 200, 900);
        // The GIL passing between the worker and the loop hands nothing.
        t.event(Event::Wake {
            tgid: P,
            tid: WORKER,
            wakee: LOOP,
            ts_ns: 910,
        });
        write(&mut t, LOOP, 5, 1000, 950, b"HTTP/1.1 200 OK\r\n");
        // The loop's part so far; the worker's 700 is booked when it is handed its next request
        // (or goes quiet for a second).
        assert_eq!(cpu(&t, "/a/{x}"), 10 + (160 - 100) + 50);
        // The next request goes to the same, now idle, worker.
        read(&mut t, LOOP, 5, 2000, 1990, b"GET /b/1 HTTP/1.1\r\n\r\n");
        t.event(Event::Wake {
            tgid: P,
            tid: LOOP,
            wakee: WORKER,
            ts_ns: 2010,
        });
        slice(&mut t, WORKER, 2100, 2600);
        // The loop's 10 ns before reading /b finished /a's response.
        assert_eq!(cpu(&t, "/a/{x}"), 10 + (160 - 100) + 50 + 10 + 700);
        t.tick(2600 + RESPONSE_QUIET_NS + 1);
        assert_eq!(cpu(&t, "/b/{x}"), 500);
        assert_eq!(count(&t, "/a/{x}"), 1);
    }

    #[test]
    fn pipelined_requests_split_lines_and_interim_responses() {
        let mut t = tracker();
        read(
            &mut t,
            LOOP,
            5,
            10,
            0,
            b"GET /a/1 HTTP/1.1\r\n\r\nGET /a/2 HTTP/1.1\r\n\r\nGET /b/3 HTTP/1.1\r\n\r\n",
        );
        for ts in [20, 30, 40] {
            write(&mut t, LOOP, 5, ts, 0, b"HTTP/1.1 200 OK\r\n");
        }
        // A request line split across two reads, answered after a 100 Continue.
        read(&mut t, LOOP, 5, 50, 0, b"GET /b/");
        read(
            &mut t,
            LOOP,
            5,
            60,
            0,
            b"9 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        );
        write(&mut t, LOOP, 5, 70, 0, b"HTTP/1.1 100 Continue\r\n");
        write(&mut t, LOOP, 5, 80, 0, b"HTTP/1.1 404 Not Found\r\n");
        t.event(Event::Close {
            io: io(LOOP, 5, 90, 0, 0),
        });
        assert_eq!((count(&t, "/a/{x}"), count(&t, "/b/{x}")), (2, 2));
        let b = Route {
            method: Method::Get,
            template: "/b/{x}".into(),
        };
        let statuses = &t.target(0).unwrap().ledger.routes[&b].statuses;
        assert_eq!(statuses.get(&404), Some(&1));
        assert_eq!(statuses.get(&200), Some(&1));
    }

    #[test]
    fn requests_never_answered_on_a_silent_connection_end_without_a_response() {
        let mut t = tracker();
        read(&mut t, LOOP, 5, 10, 1, b"GET /a/1 HTTP/1.1\r\n\r\n");
        t.tick(10 + RESPONSE_QUIET_NS * 2);
        assert_eq!(count(&t, "/a/{x}"), 0, "still waiting after two seconds");
        t.tick(10 + IDLE_STATE_NS + 1);
        let a = Route {
            method: Method::Get,
            template: "/a/{x}".into(),
        };
        assert_eq!(
            t.target(0).unwrap().ledger.routes[&a].statuses.get(&0),
            Some(&1)
        );
        // The fd's next connection starts clean: its response answers its own request.
        read(
            &mut t,
            LOOP,
            5,
            IDLE_STATE_NS * 2,
            1,
            b"GET /b/1 HTTP/1.1\r\n\r\n",
        );
        write(
            &mut t,
            LOOP,
            5,
            IDLE_STATE_NS * 2 + 5,
            1,
            b"HTTP/1.1 200 OK\r\n",
        );
        t.tick(IDLE_STATE_NS * 3);
        assert_eq!(count(&t, "/b/{x}"), 1);
        assert_eq!(count(&t, "/a/{x}"), 1);
    }

    #[test]
    fn monitors_own_openapi_fetch_counts_under_no_route() {
        let mut t = tracker();
        read(
            &mut t,
            LOOP,
            5,
            10,
            1,
            b"GET /openapi.json?monitor_openapi_fetch=1 HTTP/1.1\r\n\r\n",
        );
        write(&mut t, LOOP, 5, 20, 1, b"HTTP/1.1 200 OK\r\n");
        read(
            &mut t,
            LOOP,
            5,
            30,
            1,
            b"GET /openapi.json HTTP/1.1\r\n\r\n",
        );
        write(&mut t, LOOP, 5, 40, 1, b"HTTP/1.1 200 OK\r\n");
        t.tick(10 * RESPONSE_QUIET_NS);
        let routes = &t.target(0).unwrap().ledger.routes;
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(count(&t, "/openapi.json"), 1);
    }

    #[test]
    fn garbage_and_other_protocols_make_no_route() {
        let mut t = tracker();
        read(
            &mut t,
            LOOP,
            7,
            10,
            0,
            &[0x16, 0x03, 0x01, 0x02, 0xff, 0x00],
        );
        read(&mut t, LOOP, 7, 20, 0, b"PING\r\n");
        write(&mut t, LOOP, 7, 30, 0, b"+PONG\r\n");
        read(&mut t, LOOP, 8, 40, 0, &vec![b'A'; 64 * 1024]);
        t.tick(10 * RESPONSE_QUIET_NS);
        assert!(t.target(0).unwrap().ledger.routes.is_empty());
    }
}
