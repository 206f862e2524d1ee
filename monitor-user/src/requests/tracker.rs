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
//! - A pool thread (handed requests, never reading any) can take its next job before it sleeps:
//!   the job is queued while it returns to its queue, and no wakeup is seen. When such a thread
//!   wakes someone (the GIL, its result) while the request it was handed has been answered, it
//!   is running that unseen job: it takes the oldest request of its process that has been
//!   neither handed on nor answered, with its CPU since its last event. Routes a wakeup has
//!   handed to a pool thread come first, so a request the event loop runs itself (an `async
//!   def` waiting its turn) is not taken while a pool route's request waits. A pool thread's
//!   CPU is booked at each of its wakeups, so its previous job keeps what it ran.
//! - Explicit tags (`monitor:begin NAME` ... `monitor:end`, written by the application to fd
//!   -1) open a span on the writing thread: its CPU is the span's until the span ends, whatever
//!   requests the thread touches meanwhile. `monitor:route TEMPLATE` announces a template.
//! - The rest (a thread that never touches a request, CPU before the first one) is unattributed;
//!   the exporter reports it as the target's on-CPU time minus what the routes got, so the two
//!   add up.
//! - Syscalls are booked with the CPU, to the same owner.
//!
//! Every event carries its thread's running totals (CPU since it started, syscalls), and a
//! wakeup the wakee's: the work between two events of a thread is their difference. A thread
//! that makes no event for RESPONSE_QUIET while it works for a request (a long handler) has its
//! CPU read from the scheduler at the tick, so a route's CPU never waits for the request's end.
//!
//! A request ends with the last write of its response, known when the next response starts, the
//! connection reads another request or closes, or no write came for RESPONSE_QUIET.
use std::collections::{HashMap, HashSet, VecDeque};

use super::{
    event::{Event, Io},
    http_line::{LineParse, Method, parse_request_line, parse_status_line, request_lines},
    ledger::Ledger,
    route_table::{Route, RouteTable},
    tag::{Marker, parse_marker},
    thread_cpu::{Owner, Progress, ThreadCpu, Work},
};

/// A response with no write for this long is complete (keep-alive connections stay open).
pub const RESPONSE_QUIET_NS: u64 = 1_000_000_000;
/// A request line split across reads is waited for up to this many bytes.
const PARTIAL_LINE_MAX: usize = 8 * 1024;
/// Requests waiting for their response on one connection, at most.
const MAX_WAITING: usize = 256;
/// State of a thread or connection unused for this long is dropped.
const IDLE_STATE_NS: u64 = 120 * 1_000_000_000;
/// Tag spans open at once on one thread, at most (a `begin` past it is refused).
const MAX_SPAN_DEPTH: usize = 16;

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
    /// The request's path, for a template announced after it was read.
    path: String,
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
    /// Tagged work open on this thread, innermost last, with when each began.
    spans: Vec<(Route, u64)>,
    /// Whether the thread ever read a request line (an event loop, a thread per connection),
    /// as opposed to a pool thread that only runs what it is handed.
    reads: bool,
    /// A span that ended at an event whose totals the kernel did not know: the work up to the
    /// next known totals is its, not the next owner's.
    closed_unknown: Option<Route>,
}

impl Thread {
    /// Books the thread's work up to `ts_ns` to `owner`, or to its innermost open span.
    fn checkpoint(
        &mut self,
        targets: &mut [TargetRequests],
        slot: usize,
        ts_ns: u64,
        progress: Option<Progress>,
        owner: Owner,
    ) {
        let owner = match self.spans.last() {
            Some((route, _)) => Some(route.clone()),
            None => owner,
        };
        let work = self.cpu.checkpoint(ts_ns, progress);
        // A span is the work between its markers, and what follows its end is most often a
        // wait: when the end's totals were unknown (about one tag event in a thousand on 6.18,
        // RunningSlice naming another task), the span's work found now is the span's, with the
        // little after its end, rather than all of it the next owner's.
        let owner = if progress.is_some()
            && let Some(route) = self.closed_unknown.take()
        {
            Some(route)
        } else {
            owner
        };
        book(targets, slot, &owner, work);
    }

    /// Who the thread works for when no event says otherwise.
    fn current_owner(&self) -> Owner {
        match self.spans.last() {
            Some((route, _)) => Some(route.clone()),
            None => self.ctx.as_ref().map(|(_, r)| r.clone()),
        }
    }
}

#[derive(Default)]
struct Process {
    slot: usize,
    connections: HashMap<u32, Connection>,
    threads: HashMap<u32, Thread>,
    live: HashMap<u64, Live>,
    /// Routes a wakeup has handed to a pool thread (a FastAPI `def` endpoint), as opposed to
    /// those the reading thread runs itself (`async def`): a job a pool thread took unseen is
    /// one of these whenever one waits.
    pool_routes: HashSet<Route>,
}

pub struct Tracker {
    targets: Vec<TargetRequests>,
    processes: HashMap<u32, Process>,
    next_id: u64,
    /// Records that did not decode (a kernel object from another version).
    pub undecodable: u64,
    /// Events the kernel's ring buffer had no room for (set by the reader).
    pub events_lost: u64,
    /// Tags that were not understood (an unknown verb, an `end` with no span open, a template
    /// that does not parse, a span past MAX_SPAN_DEPTH).
    pub bad_tags: u64,
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
            bad_tags: 0,
            new_processes: Vec::new(),
        }
    }

    /// No process has served a request or tagged work yet (or all that did are gone).
    pub fn follows_nothing(&self) -> bool {
        self.processes.is_empty()
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
            Event::Tag { io, data } => self.tag(io, data),
            Event::Wake {
                tgid,
                tid,
                wakee,
                ts_ns,
                progress,
                wakee_progress,
            } => {
                self.pool_thread_wakes(tgid, tid, ts_ns, progress);
                self.wake(tgid, tid, wakee, ts_ns, wakee_progress);
            }
        }
    }

    /// The target list and the state of `io`'s process (None for a slot this daemon lacks).
    fn at(&mut self, io: &Io) -> Option<(&mut [TargetRequests], &mut Process)> {
        let slot = usize::from(io.slot);
        if slot >= self.targets.len() {
            return None;
        }
        if !self.processes.contains_key(&io.tgid) {
            self.new_processes.push(io.tgid);
        }
        let p = self.processes.entry(io.tgid).or_default();
        p.slot = slot;
        Some((&mut self.targets, p))
    }

    fn read(&mut self, io: Io, data: &[u8]) {
        let id_base = self.next_id;
        let Some((targets, p)) = self.at(&io) else {
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
            let table = &mut targets[slot].table;
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
                new.push((id, route, path));
                // Pipelining deeper than any client goes: what is left is state to drop.
                if conn.waiting.len() > MAX_WAITING
                    && let Some(oldest) = conn.waiting.pop_front()
                {
                    finished.push(oldest);
                }
            }
        }
        let new_requests = new.len() as u64;
        let conn_request = conn.answering.or(conn.waiting.front().copied());
        for (id, route, path) in &mut new {
            p.live.insert(
                *id,
                Live {
                    route: route.clone(),
                    path: std::mem::take(path),
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
            Some((_, route, _)) => Some(route.clone()),
            None => conn_request
                .and_then(|id| p.live.get(&id))
                .map(|l| l.route.clone()),
        });
        th.checkpoint(targets, slot, io.ts_ns, io.progress, owner);
        if let Some((id, route, _)) = new.last() {
            th.reads = true;
            th.ctx = Some((*id, route.clone()));
            th.fresh.extend(new.iter().map(|(id, _, _)| *id));
            if th.fresh.len() > 64 {
                let live = &p.live;
                th.fresh.retain(|id| {
                    live.get(id)
                        .is_some_and(|l| !l.handed && l.status.is_none())
                });
            }
        }
        for id in finished {
            finish(targets, p, id);
        }
        self.next_id += new_requests;
    }

    fn write(&mut self, io: Io, data: &[u8]) {
        let Some((targets, p)) = self.at(&io) else {
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
        th.checkpoint(targets, slot, io.ts_ns, io.progress, owner);
        if let Some(id) = finished {
            finish(targets, p, id);
        }
    }

    fn close(&mut self, io: Io) {
        let Some((targets, p)) = self.at(&io) else {
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
        th.checkpoint(targets, slot, io.ts_ns, io.progress, owner);
        for id in conn.answering.into_iter().chain(conn.waiting) {
            finish(targets, p, id);
        }
    }

    /// An explicit tag: a span begins or ends on the thread, or a template is announced.
    fn tag(&mut self, io: Io, data: &[u8]) {
        // A marker longer than the kernel copies is cut: refused rather than misread.
        let marker = (data.len() as u64 == io.len)
            .then(|| parse_marker(data))
            .flatten();
        let Some(marker) = marker else {
            self.bad_tags += 1;
            return;
        };
        let Some((targets, p)) = self.at(&io) else {
            return;
        };
        let slot = p.slot;
        let understood = match marker {
            Marker::Begin(name) => {
                let route = targets[slot].table.tag(name);
                let th = p.threads.entry(io.tid).or_default();
                if th.spans.len() < MAX_SPAN_DEPTH {
                    let before = th.answered.clone().or_else(|| th.current_owner());
                    th.checkpoint(targets, slot, io.ts_ns, io.progress, before);
                    th.spans.push((route, io.ts_ns));
                    true
                } else {
                    false
                }
            }
            Marker::End(status) => {
                let th = p.threads.entry(io.tid).or_default();
                if th.spans.is_empty() {
                    false
                } else {
                    th.checkpoint(targets, slot, io.ts_ns, io.progress, None);
                    let (route, start_ns) = th.spans.pop().expect("not empty");
                    if io.progress.is_none() && th.closed_unknown.is_none() {
                        th.closed_unknown = Some(route.clone());
                    }
                    let seconds = io.ts_ns.saturating_sub(start_ns) as f64 / 1e9;
                    targets[slot]
                        .ledger
                        .finish(&route, status, io.ts_ns, seconds);
                    true
                }
            }
            Marker::Route(template) => {
                let table = &mut targets[slot].table;
                match table.announce(template) {
                    Ok(true) => {
                        // Requests read before the announcement that it names take its route.
                        reroute_live(table, p, Some(template));
                        true
                    }
                    Ok(false) => true,
                    Err(_) => false,
                }
            }
        };
        if !understood {
            self.bad_tags += 1;
        }
    }

    /// Thread `tid` woke someone: if it is a pool thread, its CPU so far is booked to the job it
    /// runs, which is the oldest request nobody took when the one it was handed is answered.
    fn pool_thread_wakes(&mut self, tgid: u32, tid: u32, ts_ns: u64, progress: Option<Progress>) {
        let Some(p) = self.processes.get_mut(&tgid) else {
            return;
        };
        let handed_id = match p.threads.get(&tid) {
            Some(th) if !th.reads => match &th.ctx {
                Some((id, _)) => *id,
                None => return,
            },
            _ => return,
        };
        let answered = p.live.get(&handed_id).is_none_or(|l| l.status.is_some());
        let unseen_job = if answered {
            let live = &p.live;
            // An event loop's own request (an `async def` handler waiting for its turn, or
            // running between the pool thread's GIL hand-offs) is never a pool thread's job:
            // the oldest of the routes seen handed to a pool thread, and only when none waits,
            // the oldest of all (false sorts before true: pool routes first, then by id).
            p.threads
                .values()
                .flat_map(|t| t.fresh.iter().copied())
                .filter_map(|id| {
                    let l = live.get(&id).filter(|l| !l.handed && l.status.is_none())?;
                    Some((!p.pool_routes.contains(&l.route), id))
                })
                .min()
                .map(|(_, id)| id)
        } else {
            None
        };
        if let Some(id) = unseen_job
            && let Some(l) = p.live.get_mut(&id)
        {
            l.handed = true;
            let route = l.route.clone();
            if let Some(th) = p.threads.get_mut(&tid) {
                th.ctx = Some((id, route));
            }
        }
        let slot = p.slot;
        if let Some(th) = p.threads.get_mut(&tid) {
            let owner = th.current_owner();
            th.checkpoint(&mut self.targets, slot, ts_ns, progress, owner);
        }
    }

    fn wake(
        &mut self,
        tgid: u32,
        tid: u32,
        wakee: u32,
        ts_ns: u64,
        wakee_progress: Option<Progress>,
    ) {
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
        p.pool_routes.insert(handed.1.clone());
        let th = p.threads.entry(wakee).or_default();
        let before: Owner = th.ctx.as_ref().map(|(_, r)| r.clone());
        th.checkpoint(&mut self.targets, slot, ts_ns, wakee_progress, before);
        th.ctx = Some(handed);
    }

    /// Ends responses that went quiet, books the CPU of threads that went quiet to their
    /// request, and drops state unused for long. `now_ns` is CLOCK_MONOTONIC (the kernel's
    /// bpf_ktime_get_ns); `oncpu_now(tgid, tid)` is the scheduler's total for a thread now
    /// (/proc schedstat), None when it is gone. It is asked at most once per RESPONSE_QUIET
    /// per quiet thread that works for someone.
    pub fn tick(&mut self, now_ns: u64, oncpu_now: &mut dyn FnMut(u32, u32) -> Option<u64>) {
        for (&tgid, p) in self.processes.iter_mut() {
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
            for (&tid, th) in p.threads.iter_mut() {
                if th.cpu.last_ns() + RESPONSE_QUIET_NS < now_ns {
                    let owner = th.current_owner();
                    if owner.is_some()
                        && let Some(oncpu) = oncpu_now(tgid, tid)
                    {
                        let work = th.cpu.observe_cpu(now_ns, oncpu);
                        book(&mut self.targets, slot, &owner, work);
                    }
                }
            }
            // A thread with no event and no reading for long is gone or works for nobody; if it
            // comes back it starts afresh. One inside a tagged span is waiting for work of that
            // span (a job blocked on I/O) and is kept.
            p.threads
                .retain(|_, t| t.cpu.last_ns() + IDLE_STATE_NS > now_ns || !t.spans.is_empty());
        }
    }

    /// Processes that served their first request since the last call (a worker that started or
    /// was recycled: its routes may have changed).
    pub fn take_new_processes(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.new_processes)
    }

    /// Gives the target in `slot` the application's OpenAPI templates; requests read before
    /// they arrived and still running take their routes from them too. Returns the templates
    /// that could not be used.
    pub fn set_openapi(
        &mut self,
        slot: usize,
        templates: Vec<(Method, String)>,
    ) -> Vec<super::route_table::PatternError> {
        let Some(target) = self.targets.get_mut(slot) else {
            return Vec::new();
        };
        let rejected = target.table.set_openapi(templates);
        for p in self.processes.values_mut().filter(|p| p.slot == slot) {
            reroute_live(&mut target.table, p, None);
        }
        rejected
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

/// Routes `p`'s requests in flight again after the table learned templates (all of them, or
/// only those whose path matches the announced template `only`); monitor's own fetch stays
/// nobody's.
fn reroute_live(table: &mut RouteTable, p: &mut Process, only: Option<&str>) {
    for l in p.live.values_mut() {
        let named = only.is_none_or(|t| table.announced_matches(t, &l.path));
        if !l.route.template.is_empty() && named {
            l.route = table.route(l.route.method, &l.path);
        }
    }
}

fn book(targets: &mut [TargetRequests], slot: usize, owner: &Owner, work: Work) {
    if let (Some(route), Some(t)) = (owner, targets.get_mut(slot)) {
        t.ledger.add_work(route, work);
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
    use crate::requests::{event::Io, http_line::Method, ledger::RouteStats};

    const P: u32 = 100;
    const LOOP: u32 = 100;
    const WORKER: u32 = 101;

    fn tracker() -> Tracker {
        Tracker::new(vec![TargetRequests {
            table: RouteTable::new(&["/a/{x}".to_owned(), "/b/{x}".to_owned()], 10).unwrap(),
            ledger: Ledger::default(),
        }])
    }

    /// An event of a thread whose CPU total is `oncpu` (0: unknown) and syscalls 0.
    fn io(tid: u32, fd: u32, ts: u64, oncpu: u64, len: usize) -> Io {
        Io {
            tgid: P,
            tid,
            slot: 0,
            fd,
            ts_ns: ts,
            progress: Progress::known(oncpu, 0),
            len: len as u64,
        }
    }

    fn read(t: &mut Tracker, tid: u32, fd: u32, ts: u64, oncpu: u64, data: &[u8]) {
        t.event(Event::Read {
            io: io(tid, fd, ts, oncpu, data.len()),
            data,
        });
    }

    fn write(t: &mut Tracker, tid: u32, fd: u32, ts: u64, oncpu: u64, data: &[u8]) {
        t.event(Event::Write {
            io: io(tid, fd, ts, oncpu, data.len()),
            data,
        });
    }

    fn wake(t: &mut Tracker, tid: u32, wakee: u32, ts: u64, wakee_oncpu: u64) {
        t.event(Event::Wake {
            tgid: P,
            tid,
            wakee,
            ts_ns: ts,
            progress: None,
            wakee_progress: Progress::known(wakee_oncpu, 0),
        });
    }

    /// A wakeup whose waker's CPU total is `waker_oncpu`.
    fn wake_by(t: &mut Tracker, tid: u32, waker_oncpu: u64, wakee: u32, ts: u64, wakee_oncpu: u64) {
        t.event(Event::Wake {
            tgid: P,
            tid,
            wakee,
            ts_ns: ts,
            progress: Progress::known(waker_oncpu, 0),
            wakee_progress: Progress::known(wakee_oncpu, 0),
        });
    }

    /// A tick where no thread can be read from /proc.
    fn tick(t: &mut Tracker, now: u64) {
        t.tick(now, &mut |_, _| None);
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

    fn tag(t: &mut Tracker, tid: u32, ts: u64, oncpu: u64, syscalls: u32, marker: &str) {
        let mut io = io(tid, u32::MAX, ts, oncpu, marker.len());
        io.progress = Progress::known(oncpu, syscalls);
        t.event(Event::Tag {
            io,
            data: marker.as_bytes(),
        });
    }

    fn tagged(t: &Tracker, name: &str) -> Option<RouteStats> {
        let route = Route {
            method: Method::Tag,
            template: name.into(),
        };
        t.target(0).unwrap().ledger.routes.get(&route).cloned()
    }

    #[test]
    fn a_tagged_span_takes_its_threads_cpu_and_syscalls_even_inside_a_request() {
        let mut t = tracker();
        const JOB: u32 = 102;
        // A job thread tagged from 200 (CPU total 1200, 3 syscalls) to 500 (1500, 10).
        tag(&mut t, JOB, 200, 1200, 3, "monitor:begin nightly");
        tag(&mut t, JOB, 500, 1500, 10, "monitor:end");
        let s = tagged(&t, "nightly").unwrap();
        assert_eq!((s.cpu_ns, s.syscalls, s.count()), (300, 7, 1));
        assert_eq!(s.statuses.get(&0), Some(&1));
        // Inside an HTTP request on the loop thread (running throughout), a span gets the CPU
        // while it is open.
        read(&mut t, LOOP, 5, 1000, 1000, b"GET /a/1 HTTP/1.1\r\n\r\n");
        tag(&mut t, LOOP, 1100, 1100, 0, "monitor:begin score");
        tag(&mut t, LOOP, 1400, 1400, 0, "monitor:end 500");
        write(&mut t, LOOP, 5, 1500, 1500, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(cpu(&t, "/a/{x}"), 100 + 100);
        let s = tagged(&t, "score").unwrap();
        assert_eq!((s.cpu_ns, s.statuses.get(&500)), (300, Some(&1)));
        // Nonsense is counted, not booked.
        tag(&mut t, LOOP, 1600, 1600, 0, "monitor:end");
        tag(&mut t, LOOP, 1700, 1700, 0, "monitor:frobnicate");
        assert_eq!(t.bad_tags, 2);
    }

    /// An end whose totals the kernel did not know: the span's work is found at the thread's
    /// next known totals and is still the span's (with the little after its end).
    #[test]
    fn a_span_that_ends_with_unknown_totals_keeps_its_work() {
        let mut t = tracker();
        const JOB: u32 = 102;
        tag(&mut t, JOB, 200, 1200, 3, "monitor:begin report");
        tag(&mut t, JOB, 500, 0, 0, "monitor:end");
        // Asleep from 500; the next unit begins at 900 with CPU total 1510, 5 syscalls.
        tag(&mut t, JOB, 900, 1510, 5, "monitor:begin report");
        tag(&mut t, JOB, 1200, 1810, 6, "monitor:end");
        let s = tagged(&t, "report").unwrap();
        assert_eq!((s.cpu_ns, s.syscalls, s.count()), (310 + 300, 2 + 1, 2));
        // An unknown begin leaves the work before it where it was: the next owner's.
        tag(&mut t, JOB, 1300, 0, 0, "monitor:begin report");
        tag(&mut t, JOB, 1600, 2200, 8, "monitor:end");
        let s = tagged(&t, "report").unwrap();
        assert_eq!((s.cpu_ns, s.count()), (610 + 390, 3));
    }

    #[test]
    fn an_announced_template_names_the_request_being_handled_and_later_ones() {
        let mut t = tracker();
        read(&mut t, LOOP, 5, 10, 10, b"GET /orders/17 HTTP/1.1\r\n\r\n");
        tag(&mut t, LOOP, 20, 20, 0, "monitor:route /orders/{order_id}");
        write(&mut t, LOOP, 5, 30, 30, b"HTTP/1.1 200 OK\r\n");
        read(&mut t, LOOP, 5, 40, 40, b"GET /orders/18 HTTP/1.1\r\n\r\n");
        write(&mut t, LOOP, 5, 50, 50, b"HTTP/1.1 200 OK\r\n");
        tick(&mut t, 10 * RESPONSE_QUIET_NS);
        assert_eq!(count(&t, "/orders/{order_id}"), 2);
        assert_eq!(count(&t, "/orders/{id}"), 0);
    }

    #[test]
    fn syscalls_are_booked_with_the_cpu() {
        let mut t = tracker();
        // The loop's totals at an earlier write: where counting starts.
        let mut c = io(LOOP, 6, 50, 40, 1);
        c.progress = Progress::known(40, 2);
        t.event(Event::Write { io: c, data: b"x" });
        let mut r = io(LOOP, 5, 100, 90, 20);
        r.progress = Progress::known(90, 4);
        t.event(Event::Read {
            io: r,
            data: b"GET /a/1 HTTP/1.1\r\n",
        });
        let mut w = io(LOOP, 5, 300, 290, 17);
        w.progress = Progress::known(290, 9);
        t.event(Event::Write {
            io: w,
            data: b"HTTP/1.1 200 OK\r\n",
        });
        let a = Route {
            method: Method::Get,
            template: "/a/{x}".into(),
        };
        // The 2 syscalls up to the read belong to it too (waking up for it, reading it).
        let stats = &t.target(0).unwrap().ledger.routes[&a];
        assert_eq!((stats.cpu_ns, stats.syscalls), (250, 7));
    }

    #[test]
    fn an_event_loop_interleaving_two_requests_books_each_its_own_work() {
        let mut t = tracker();
        // The loop thread runs throughout: reads a (fd 5) and b (fd 6), runs a's handler for
        // 400, writes a's response, runs b's for 300, writes b's.
        let (a, b) = (
            b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /b/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        read(&mut t, LOOP, 5, 100, 100, a);
        read(&mut t, LOOP, 6, 120, 120, b);
        write(&mut t, LOOP, 5, 520, 520, b"HTTP/1.1 200 OK\r\n");
        write(&mut t, LOOP, 6, 820, 820, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(cpu(&t, "/a/{x}"), 400);
        assert_eq!(cpu(&t, "/b/{x}"), 20 + 300);
        // Both end when the connection reads its next request or goes quiet.
        tick(&mut t, 820 + RESPONSE_QUIET_NS + 1);
        assert_eq!((count(&t, "/a/{x}"), count(&t, "/b/{x}")), (1, 1));
    }

    #[test]
    fn a_request_handed_to_an_idle_worker_gets_the_workers_cpu() {
        let mut t = tracker();
        // The loop reads /a at 100 (CPU total 1000), runs until 160 and wakes the worker at
        // 150, whose total is then 5000 (its old work is nobody's).
        read(&mut t, LOOP, 5, 100, 1000, b"GET /a/1 HTTP/1.1\r\n\r\n");
        wake(&mut t, LOOP, WORKER, 150, 5000);
        // The worker runs 200..900 and wakes the loop (1060 after its 60 ns): the GIL or the
        // result passing to a busy loop hands nothing.
        wake(&mut t, WORKER, LOOP, 910, 1060);
        // The loop runs 950..1000 and writes the response.
        write(&mut t, LOOP, 5, 1000, 1110, b"HTTP/1.1 200 OK\r\n");
        // The loop's part so far; the worker's 700 is booked when it is handed its next request
        // (or is read from /proc after a quiet second).
        assert_eq!(cpu(&t, "/a/{x}"), 110);
        // The next request goes to the same, now idle, worker.
        read(&mut t, LOOP, 5, 2000, 1120, b"GET /b/1 HTTP/1.1\r\n\r\n");
        wake(&mut t, LOOP, WORKER, 2010, 5700);
        // The loop's 10 ns before reading /b finished /a's response.
        assert_eq!(cpu(&t, "/a/{x}"), 110 + 10 + 700);
        // The worker runs 2100..2600 and makes no event: the tick reads its total.
        t.tick(2600 + RESPONSE_QUIET_NS + 1, &mut |tgid, tid| {
            (tgid == P && tid == WORKER).then_some(6200)
        });
        assert_eq!(cpu(&t, "/b/{x}"), 500);
        assert_eq!(count(&t, "/a/{x}"), 1);
    }

    #[test]
    fn a_job_a_pool_thread_took_without_a_wakeup_is_the_oldest_request_nobody_took() {
        let mut t = tracker();
        // The loop reads /b and hands it to the worker, which runs it (100 ns) and passes its
        // result back to the loop.
        read(&mut t, LOOP, 5, 100, 1000, b"GET /b/1 HTTP/1.1\r\n\r\n");
        wake(&mut t, LOOP, WORKER, 150, 5000);
        wake_by(&mut t, WORKER, 5100, LOOP, 300, 1000);
        write(&mut t, LOOP, 5, 400, 1100, b"HTTP/1.1 200 OK\r\n");
        // The loop reads /a and queues it while the worker has not gone back to sleep: the
        // worker takes it with no wakeup, runs it (8000 ns) and wakes the loop with its result.
        read(&mut t, LOOP, 5, 500, 1150, b"GET /a/1 HTTP/1.1\r\n\r\n");
        wake_by(&mut t, WORKER, 13_110, LOOP, 9000, 1200);
        write(&mut t, LOOP, 5, 9100, 1300, b"HTTP/1.1 200 OK\r\n");
        // /b: the worker's 100 and the loop's 100 + 50 around its response; /a: the worker's
        // 8000 (and its 10 ns back to its queue), and the loop's 150.
        assert_eq!(cpu(&t, "/b/{x}"), 250);
        assert_eq!(cpu(&t, "/a/{x}"), 8160);
        // The next request handed to the worker is that one, not /a again.
        read(&mut t, LOOP, 5, 10_000, 1350, b"GET /b/2 HTTP/1.1\r\n\r\n");
        wake(&mut t, LOOP, WORKER, 10_010, 13_200);
        wake_by(&mut t, WORKER, 13_260, LOOP, 10_100, 1400);
        assert_eq!(cpu(&t, "/a/{x}"), 8160 + 50 + 90);
        assert_eq!(cpu(&t, "/b/{x}"), 250 + 60);
    }

    #[test]
    fn a_job_a_pool_thread_took_without_a_wakeup_is_not_a_request_the_loop_runs_itself() {
        let mut t = tracker();
        // /b runs on the pool: the loop hands it to the worker, which passes its result back.
        read(&mut t, LOOP, 5, 100, 1000, b"GET /b/1 HTTP/1.1\r\n\r\n");
        wake(&mut t, LOOP, WORKER, 150, 5000);
        wake_by(&mut t, WORKER, 5100, LOOP, 300, 1000);
        write(&mut t, LOOP, 5, 400, 1100, b"HTTP/1.1 200 OK\r\n");
        // The loop reads /a (an `async def` the loop runs itself), then /b again, which it queues
        // for the worker before the worker went back to sleep (no wakeup). The worker runs /b
        // (8000 ns from 5110) and passes the GIL to the loop halfway through its /a.
        read(&mut t, LOOP, 6, 500, 1150, b"GET /a/1 HTTP/1.1\r\n\r\n");
        read(&mut t, LOOP, 7, 510, 1160, b"GET /b/2 HTTP/1.1\r\n\r\n");
        wake_by(&mut t, WORKER, 9110, LOOP, 4600, 1260);
        // The worker's 4010 so far is /b's, though /a is older and neither is answered.
        assert_eq!(cpu(&t, "/a/{x}"), 0);
        assert_eq!(cpu(&t, "/b/{x}"), 250 + 10 + 4010);
        write(&mut t, LOOP, 6, 5000, 2260, b"HTTP/1.1 200 OK\r\n");
        wake_by(&mut t, WORKER, 13_110, LOOP, 9000, 2300);
        write(&mut t, LOOP, 7, 9100, 2400, b"HTTP/1.1 200 OK\r\n");
        // /a: the loop's 1100 up to its response; /b: the worker's 8010 and the loop's 140.
        assert_eq!(
            (cpu(&t, "/a/{x}"), cpu(&t, "/b/{x}")),
            (1100, 250 + 10 + 8010 + 140)
        );
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
        tick(&mut t, 10 + RESPONSE_QUIET_NS * 2);
        assert_eq!(count(&t, "/a/{x}"), 0, "still waiting after two seconds");
        tick(&mut t, 10 + IDLE_STATE_NS + 1);
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
        tick(&mut t, IDLE_STATE_NS * 3);
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
        tick(&mut t, 10 * RESPONSE_QUIET_NS);
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
        tick(&mut t, 10 * RESPONSE_QUIET_NS);
        assert!(t.target(0).unwrap().ledger.routes.is_empty());
    }
}
