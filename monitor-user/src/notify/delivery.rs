//! The delivery loops: the outbox writer thread (splits each batch into entries per channel and
//! persists them before waking the senders) and one sender task per channel (in order, with
//! backoff), with the rules for which queued alerts are still worth sending.
use std::collections::HashSet;

use super::*;
use crate::alerts::Severity;

/// Queue directories left by channels no longer configured: say so, they will not be sent.
pub(super) fn warn_orphans(outbox_dir: &Path, queues: &[Arc<Queue>]) {
    let Ok(items) = std::fs::read_dir(outbox_dir) else {
        return;
    };
    for item in items.flatten() {
        let dir = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if !dir.is_dir() || queues.iter().any(|q| q.dir.is_some() && q.name == name) {
            continue;
        }
        let count = std::fs::read_dir(&dir).map_or(0, |d| {
            d.flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".json"))
                .count()
        });
        if count > 0 {
            tracing::warn!(
                "{count} undelivered notification(s) in {}: no configured notifier is named {name:?}",
                dir.display()
            );
        }
    }
}

/// The outbox writer thread: blocking file I/O off the async workers, one batch at a time so
/// each channel's queue keeps the order of send() calls. A batch's entries join the queue
/// together, so that a channel merging what is pending sees alerts that fired together.
pub(super) fn write_loop(
    shared: &Shared,
    mut outboxes: Vec<Option<Outbox>>,
    mut rx: mpsc::UnboundedReceiver<Vec<Alert>>,
) {
    let mut memory_seq = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        let created = SystemTime::now();
        for (q, outbox) in shared.queues.iter().zip(outboxes.iter_mut()) {
            let mut entries = Vec::new();
            for alerts in q.channel.split(&batch) {
                let (seq, path) = match outbox {
                    Some(outbox) => {
                        let seq = outbox.next_seq();
                        match outbox.append(seq, created, &alerts) {
                            Ok(path) => (seq, Some(path)),
                            Err(e) => {
                                tracing::error!(
                                    channel = %q.name,
                                    "{e}; sending from memory only (lost if monitor stops first)"
                                );
                                (seq, None)
                            }
                        }
                    }
                    None => {
                        memory_seq += 1;
                        (memory_seq, None)
                    }
                };
                entries.push(Entry {
                    seq,
                    created,
                    alerts: alerts.into(),
                    path,
                });
            }
            let n = {
                let mut pending = lock(&q.pending);
                pending.extend(entries);
                pending.len()
            };
            shared.set_pending(q, n);
            q.wake.notify_one();
        }
        shared.backlog.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One channel's sender: delivers its queue in order, retrying the head with backoff. Channels
/// with a rate limit wait for it, then send the head merged with whatever queued meanwhile.
pub(super) async fn send_loop(shared: Arc<Shared>, q: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let options = &shared.options;
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let head = lock(&q.pending).front().cloned();
        let Some(entry) = head else {
            tokio::select! {
                () = q.wake.notified() => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        let age = SystemTime::now()
            .duration_since(entry.created)
            .unwrap_or_default();
        if age > options.max_age {
            tracing::error!(
                channel = %q.name,
                "dropping a notification of {} alert(s) ({}) queued {} ago: older than max_age {}, never delivered to {}",
                entry.alerts.len(),
                names(&entry.alerts),
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(options.max_age),
                q.channel.describe()
            );
            shared.metrics.dropped.with_label_values(&[&q.name]).inc();
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            shared.finish(&q, &entry);
            attempt = 0;
            continue;
        }
        let wait = q.channel.pace_wait();
        if !wait.is_zero() {
            tracing::debug!(channel = %q.name, "rate limit: next message in {wait:?}");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let (taken, fresh) = take(&shared, &q);
        if fresh.is_empty() {
            tracing::debug!(channel = %q.name, "skipping {}: a later notification repeats it, or it was sent less than repeat_interval ago", names(&entry.alerts));
            for e in &taken {
                shared.finish(&q, e);
            }
            continue;
        }
        let result = tokio::select! {
            r = q.channel.deliver(&q.name, &fresh, &shared.ctx) => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(()) => {
                shared
                    .metrics
                    .sent
                    .with_label_values(&[&q.name])
                    .inc_by(fresh.len() as u64);
                if attempt > 0 {
                    tracing::info!(channel = %q.name, "delivered to {} after {attempt} failed attempt(s)", q.channel.describe());
                }
                *lock(&q.refusal) = None;
                for e in &taken {
                    shared.finish(&q, e);
                }
                attempt = 0;
            }
            Err(e) if e.is_permanent() => {
                shared.metrics.failed.with_label_values(&[&q.name]).inc();
                shared
                    .metrics
                    .dropped
                    .with_label_values(&[&q.name])
                    .inc_by(taken.len() as u64);
                shared.dropped.fetch_add(taken.len(), Ordering::SeqCst);
                let said = e.to_string();
                let again = lock(&q.refusal).replace(said.clone()).as_deref() == Some(&said);
                if again {
                    tracing::debug!(channel = %q.name, "{said}; dropping {} ({}) too", names(&fresh), status_word(&fresh));
                } else {
                    tracing::error!(
                        channel = %q.name,
                        "{said}; dropping this notification of {} ({}): resending cannot succeed \
                         (the same refusal for later notifications is logged at debug level)",
                        names(&fresh),
                        status_word(&fresh)
                    );
                }
                for e in &taken {
                    shared.finish(&q, e);
                }
                attempt = 0;
            }
            Err(e) => {
                shared.metrics.failed.with_label_values(&[&q.name]).inc();
                let mut delay = backoff(attempt, options.retry_initial, options.retry_max);
                if let Some(asked) = e.rate_limited() {
                    // Whatever queues meanwhile goes out merged with these, once allowed.
                    delay = delay.max(asked);
                }
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    channel = %q.name,
                    "{e}; retrying in {} (attempt {attempt}, {} notification(s) waiting)",
                    humantime::format_duration(delay),
                    q.len()
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// The entries the next delivery sends (the head, and for merging channels what follows and
/// fits in one message) and their alerts that no later queued entry repeats.
fn take(shared: &Shared, q: &Queue) -> (Vec<Entry>, Vec<Alert>) {
    let max_age = shared.options.max_age;
    let now = SystemTime::now();
    let (candidates, groups) = {
        let mut guard = lock(&q.pending);
        let pending = guard.make_contiguous();
        // Entries past max_age are dropped (with their error) when they reach the head.
        let young = if q.channel.merges() {
            pending
                .iter()
                .take_while(|e| now.duration_since(e.created).unwrap_or_default() <= max_age)
                .count()
                .max(1)
        } else {
            1
        }
        .min(pending.len());
        let groups: Vec<Vec<Alert>> = not_superseded(pending, young)
            .into_iter()
            .map(|alerts| q.channel.without_recent_repeats(alerts))
            .collect();
        // Only the entries this delivery may take are copied: a long queue behind a receiver
        // that is down is not cloned at every attempt.
        (pending[..young].to_vec(), groups)
    };
    // Rendering (chat robots) runs without the queue's lock.
    let n = q
        .channel
        .fit(&groups, &shared.ctx)
        .max(1)
        .min(candidates.len());
    let fresh = groups[..n].concat();
    (candidates[..n].to_vec(), fresh)
}

/// The alerts of each of the first `first` queued entries that no later queued entry repeats.
/// While a receiver is down the engine keeps re-sending firing alerts on its repeat interval;
/// once the receiver is back only the latest repeat of each firing episode (same alert, status
/// and start) matters, and sending them all would flood an inbox with hours of identical emails.
/// Transitions are kept: a firing followed by its resolution sends both. One pass from the back,
/// so a long backlog costs its length, not its square, under the queue's lock.
pub(super) fn not_superseded(pending: &[Entry], first: usize) -> Vec<Vec<Alert>> {
    type Episode<'a> = (
        &'a str,
        AlertStatus,
        SystemTime,
        Severity,
        &'a BTreeMap<String, String>,
    );
    fn episode(a: &Alert) -> Episode<'_> {
        (&a.name, a.status, a.starts_at, a.severity, &a.labels)
    }
    let mut later: HashSet<Episode<'_>> = HashSet::new();
    let mut fresh = vec![Vec::new(); first.min(pending.len())];
    for (i, entry) in pending.iter().enumerate().rev() {
        if let Some(slot) = fresh.get_mut(i) {
            *slot = entry
                .alerts
                .iter()
                .filter(|a| !later.contains(&episode(a)))
                .cloned()
                .collect();
        }
        later.extend(entry.alerts.iter().map(episode));
    }
    fresh
}

pub(super) fn names(alerts: &[Alert]) -> String {
    let mut names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    names.dedup();
    names.join(", ")
}

pub(super) fn status_word(alerts: &[Alert]) -> &'static str {
    if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        "firing"
    } else {
        "resolved"
    }
}
