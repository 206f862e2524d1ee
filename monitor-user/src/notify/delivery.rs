//! The delivery loops: the outbox writer thread (splits each batch into entries per channel and
//! persists them before waking the senders) and one sender task per channel (in order, with
//! backoff), with the rules for which queued alerts are still worth sending.
use super::*;

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
/// each channel's queue keeps the order of send() calls.
pub(super) fn write_loop(
    shared: &Shared,
    mut outboxes: Vec<Option<Outbox>>,
    mut rx: mpsc::UnboundedReceiver<Vec<Alert>>,
) {
    let mut memory_seq = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        let created = SystemTime::now();
        for (q, outbox) in shared.queues.iter().zip(outboxes.iter_mut()) {
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
                let n = {
                    let mut pending = lock(&q.pending);
                    pending.push_back(Entry {
                        seq,
                        created,
                        alerts: alerts.into(),
                        path,
                    });
                    pending.len()
                };
                shared.set_pending(q, n);
                q.wake.notify_one();
            }
        }
        shared.backlog.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One channel's sender: delivers its queue in order, retrying the head with backoff.
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
            shared.finish(&q, &entry);
            attempt = 0;
            continue;
        }
        let fresh = not_superseded(&entry, &lock(&q.pending));
        if fresh.is_empty() {
            tracing::debug!(channel = %q.name, "skipping {}: a later notification repeats it", names(&entry.alerts));
            shared.finish(&q, &entry);
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
                shared.finish(&q, &entry);
                attempt = 0;
            }
            Err(e) if e.is_permanent() => {
                shared.metrics.failed.with_label_values(&[&q.name]).inc();
                shared.metrics.dropped.with_label_values(&[&q.name]).inc();
                tracing::error!(
                    channel = %q.name,
                    "{e}; dropping this notification of {} ({}): resending cannot succeed",
                    names(&entry.alerts),
                    status_word(&entry.alerts)
                );
                shared.finish(&q, &entry);
                attempt = 0;
            }
            Err(e) => {
                shared.metrics.failed.with_label_values(&[&q.name]).inc();
                let delay = backoff(attempt, options.retry_initial, options.retry_max);
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

/// The head entry's alerts that no later queued entry repeats. While a receiver is down the
/// engine keeps re-sending firing alerts on its repeat interval; once the receiver is back only
/// the latest repeat of each firing episode (same alert, status and start) matters, and sending
/// them all would flood an inbox with hours of identical emails. Transitions are kept: a firing
/// followed by its resolution sends both.
pub(super) fn not_superseded(head: &Entry, pending: &VecDeque<Entry>) -> Vec<Alert> {
    let same_episode = |a: &Alert, b: &Alert| {
        a.name == b.name
            && a.status == b.status
            && a.starts_at == b.starts_at
            && a.severity == b.severity
            && a.labels == b.labels
    };
    let later: Vec<&Alert> = pending
        .iter()
        .filter(|e| e.seq != head.seq)
        .flat_map(|e| e.alerts.iter())
        .collect();
    head.alerts
        .iter()
        .filter(|a| !later.iter().any(|b| same_episode(a, b)))
        .cloned()
        .collect()
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
