//! What the notifier, the outbox writer thread and the sender tasks share: each channel's queue
//! (the in-memory mirror of its outbox directory), the delivery metrics, the options.
use super::*;

/// One channel and its queue (the in-memory mirror of its outbox directory).
pub(super) struct Queue {
    pub(super) name: String,
    pub(super) channel: Channel,
    pub(super) dir: Option<PathBuf>,
    pub(super) pending: Mutex<VecDeque<Entry>>,
    pub(super) wake: tokio::sync::Notify,
    /// The last refusal logged as an error: the same refusal again is logged at debug, so a bad
    /// token or signature shows once, not once per alert.
    pub(super) refusal: Mutex<Option<String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves a queue that is still consistent (every
    // change is a single push or pop), so carry on rather than lose the notifications.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        lock(&self.pending).len()
    }
}

pub(super) struct Metrics {
    pub(super) sent: IntCounterVec,
    pub(super) failed: IntCounterVec,
    pub(super) dropped: IntCounterVec,
    pub(super) pending: IntGaugeVec,
}

impl Metrics {
    pub(super) fn new(registry: Option<&Registry>) -> Result<Self, NotifyError> {
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["channel"]);
        let m = Self {
            sent: counter(
                "monitor_notifications_sent_total",
                "Alerts delivered, by notification channel.",
            )?,
            failed: counter(
                "monitor_notifications_failed_total",
                "Failed delivery attempts (each retry counts), by notification channel.",
            )?,
            dropped: counter(
                "monitor_notifications_dropped_total",
                "Queued notifications given up on (refused for good, or older than max_age).",
            )?,
            pending: IntGaugeVec::new(
                Opts::new(
                    "monitor_outbox_pending",
                    "Notifications queued and not yet delivered, by notification channel.",
                ),
                &["channel"],
            )?,
        };
        if let Some(registry) = registry {
            registry.register(Box::new(m.sent.clone()))?;
            registry.register(Box::new(m.failed.clone()))?;
            registry.register(Box::new(m.dropped.clone()))?;
            registry.register(Box::new(m.pending.clone()))?;
        }
        Ok(m)
    }
}

pub(super) struct Shared {
    pub(super) queues: Vec<Arc<Queue>>,
    pub(super) ctx: Context,
    pub(super) options: NotifyOptions,
    pub(super) metrics: Metrics,
    /// Batches handed to send() and not yet queued by the writer thread.
    pub(super) backlog: AtomicUsize,
    /// Notifications given up on since start (refused for good, or too old).
    pub(super) dropped: AtomicUsize,
}

impl Shared {
    pub(super) fn set_pending(&self, q: &Queue, n: usize) {
        self.metrics
            .pending
            .with_label_values(&[&q.name])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Removes the entry (delivered or given up on) from the front of its queue and its file.
    pub(super) fn finish(&self, q: &Queue, entry: &Entry) {
        if let Some(path) = &entry.path
            && let Err(e) = outbox::remove(path)
        {
            tracing::error!(channel = %q.name, "{e}");
        }
        let mut pending = lock(&q.pending);
        if pending.front().is_some_and(|e| e.seq == entry.seq) {
            pending.pop_front();
        }
        let n = pending.len();
        drop(pending);
        self.set_pending(q, n);
    }
}
