//! Alert notifiers: log, Alertmanager (API v2), webhook (Alertmanager's webhook body) and email,
//! behind a persisted outbox so that a receiver that is down, or a daemon restart, loses nothing.
//!
//! Data flow: [`Notifier::send`] hands a batch of [`Alert`]s to the outbox writer thread, which
//! splits it into one entry per delivery unit for each channel (Alertmanager: the batch; webhook:
//! one per alert name; email: one per alert; log: the batch), appends each entry to the channel's
//! queue directory (fsync'd) and only then wakes the channel's sender task. The sender delivers
//! its queue in order, one entry at a time, retrying with exponential backoff until the entry is
//! delivered, refused for good (dropped, with an error), or older than `max_age` (dropped, with
//! an error). A delivered entry's file is removed; whatever is still on disk at start is sent.
//!
//! When an entry cannot be written (full disk, unwritable directory) the error names the path
//! and the entry is still delivered from memory: persistence failing must not silence alerts.
mod alertmanager;
mod channel;
mod config;
mod delivery;
mod email;
mod http;
mod im;
mod log;
mod outbox;
mod queue;
mod redact;
mod webhook;

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{mpsc, watch};

#[allow(
    unused_imports,
    reason = "the daemon's API: parse_notifiers / NotifySettings for reading the config file"
)]
pub use config::{
    ConfigError, NotifierConfig, NotifyOptions, NotifySettings, parse_notifiers,
    parse_notify_settings,
};

use crate::alerts::{Alert, AlertStatus};
use channel::*;
use delivery::*;
use outbox::{Entry, Outbox};
use queue::*;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Email(#[from] email::EmailError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Im(#[from] im::ImError),
    #[error("registering the notifier metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("starting the outbox writer thread: {0}")]
    Thread(std::io::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a JSON alert or array of alerts: {source}")]
    AlertJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{count} notification(s) refused for good and dropped (see the errors above)")]
    Dropped { count: usize },
    #[error("{pending} notification(s) still undelivered after {timeout:?}: {detail}")]
    Timeout {
        pending: usize,
        timeout: Duration,
        detail: String,
    },
}

impl NotifyError {
    /// Resending the same notification cannot succeed (see each channel's rule).
    fn is_permanent(&self) -> bool {
        match self {
            Self::Http(e) => e.is_permanent(),
            Self::Email(e) => e.is_permanent(),
            Self::Im(e) => e.is_permanent(),
            _ => false,
        }
    }

    /// The platform said "too fast": the wait it asked for (zero when it named none).
    fn rate_limited(&self) -> Option<Duration> {
        match self {
            Self::Im(e) => e.rate_limited(),
            _ => None,
        }
    }
}

/// What every channel says about where alerts come from.
#[derive(Clone, Debug)]
pub struct Context {
    /// The daemon's identity: the `instance` label of alerts that lack one.
    pub instance: String,
    /// `generatorURL` of each alert, `externalURL` of webhook bodies.
    pub external_url: String,
}

impl Context {
    /// `instance`, and `external_url` from the options or else `http://INSTANCE`.
    fn new(options: &NotifyOptions, instance: String) -> Self {
        Self {
            external_url: options
                .external_url
                .clone()
                .unwrap_or_else(|| format!("http://{instance}")),
            instance,
        }
    }
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager writes and reads it. Clamped to what the
/// format can hold, so no alert time can make formatting fail.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, max)).to_string()
}

/// `Alert::all_labels()`, with `instance` filled in when the rule left it out: Alertmanager tells
/// alerts apart by their labels, and two daemons' alerts must not merge.
pub(crate) fn labels_with_instance(alert: &Alert, instance: &str) -> BTreeMap<String, String> {
    let mut labels = alert.all_labels();
    labels
        .entry("instance".into())
        .or_insert_with(|| instance.to_string());
    labels
}

/// The alert's annotations plus `value` (unless the rule set one): receivers show annotations,
/// and the value is what a reader wants first.
pub(crate) fn annotations_with_value(alert: &Alert) -> BTreeMap<String, String> {
    let mut annotations = alert.annotations.clone();
    annotations
        .entry("value".into())
        .or_insert_with(|| alert.value.to_string());
    annotations
}

/// The delay before retry number `attempt + 1`: `initial`, doubling, capped at `max`.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// The host name (EHLO name, `instance` for notify-deliver).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The running notifiers. Dropping it without [`Notifier::shutdown`] stops the senders too.
pub struct Notifier {
    shared: Arc<Shared>,
    tx: Option<mpsc::UnboundedSender<Vec<Alert>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    /// Checks the configuration (bad URLs, addresses, duplicate names, credentials that would go
    /// out in clear text are errors), loads what the
    /// outbox holds from earlier runs and starts one sender task per channel. Must be called
    /// within a tokio runtime. `outbox_dir` gets one subdirectory per channel, named after it;
    /// problems with it are logged, not fatal (the queues then live in memory). `instance`
    /// fills the `instance` label of alerts lacking one and the default external URL.
    pub async fn start(
        configs: Vec<NotifierConfig>,
        options: NotifyOptions,
        outbox_dir: PathBuf,
        instance: String,
        registry: Option<&Registry>,
    ) -> Result<Self, NotifyError> {
        options.validate()?;
        let names = config::check_notifiers(&configs)?;
        let ctx = Context::new(&options, instance);
        let client = http::HttpClient::new(options.timeout);
        let metrics = Metrics::new(registry)?;

        let mut queues = Vec::new();
        let mut outboxes = Vec::new();
        for (config, name) in configs.iter().zip(names) {
            let channel = Channel::build(config, &name, &client, options.timeout)?;
            let (outbox, found) = if channel.durable() {
                let (outbox, found, problems) = Outbox::open(outbox_dir.join(&name));
                for problem in problems {
                    tracing::error!(channel = %name, "{problem}");
                }
                if !found.is_empty() {
                    tracing::info!(
                        channel = %name,
                        "{} notification(s) left in {} by an earlier run: sending them to {}",
                        found.len(),
                        outbox.dir().display(),
                        channel.describe()
                    );
                }
                (Some(outbox), found)
            } else {
                (None, Vec::new())
            };
            let q = Queue {
                dir: outbox.as_ref().map(|o| o.dir().to_path_buf()),
                name,
                channel,
                pending: Mutex::new(found.into()),
                wake: tokio::sync::Notify::new(),
                refusal: Mutex::new(None),
            };
            metrics
                .pending
                .with_label_values(&[&q.name])
                .set(i64::try_from(q.len()).unwrap_or(i64::MAX));
            metrics.sent.with_label_values(&[&q.name]);
            metrics.failed.with_label_values(&[&q.name]);
            metrics.dropped.with_label_values(&[&q.name]);
            queues.push(Arc::new(q));
            outboxes.push(outbox);
        }
        warn_orphans(&outbox_dir, &queues);

        let shared = Arc::new(Shared {
            queues,
            ctx,
            options,
            metrics,
            backlog: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("monitor-outbox".into())
                .spawn(move || write_loop(&shared, outboxes, rx))
                .map_err(NotifyError::Thread)?
        };
        let (stop, _) = watch::channel(false);
        let senders = shared
            .queues
            .iter()
            .map(|q| tokio::spawn(send_loop(shared.clone(), q.clone(), stop.subscribe())))
            .collect();
        Ok(Self {
            shared,
            tx: Some(tx),
            writer: Some(writer),
            stop,
            senders,
        })
    }

    /// Queues alerts on every channel. Never blocks: the outbox writer thread persists them
    /// (before any send attempt) and wakes the senders.
    pub fn send(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() || self.shared.queues.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        self.shared.backlog.fetch_add(1, Ordering::SeqCst);
        if tx.send(alerts).is_err() {
            // Only after the writer thread died, which it does not do while `tx` lives.
            self.shared.backlog.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("the outbox writer has stopped: notification not queued");
        }
    }

    /// Notifications queued and not yet delivered, over all channels.
    pub fn pending(&self) -> usize {
        self.shared.backlog.load(Ordering::SeqCst)
            + self.shared.queues.iter().map(|q| q.len()).sum::<usize>()
    }

    /// Waits until every queue is empty (delivered or given up on), or `timeout` passes (a
    /// timeout past what an `Instant` holds never does).
    pub async fn drain(&self, timeout: Duration) -> Result<(), NotifyError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let pending = self.pending();
            if pending == 0 {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let detail = self
                    .shared
                    .queues
                    .iter()
                    .filter(|q| q.len() > 0)
                    .map(|q| match &q.dir {
                        Some(dir) => format!(
                            "{} pending for {} (kept in {})",
                            q.len(),
                            q.channel.describe(),
                            dir.display()
                        ),
                        None => format!("{} pending for {}", q.len(), q.channel.describe()),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(NotifyError::Timeout {
                    pending,
                    timeout,
                    detail,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Persists what send() was given, then stops the senders (an attempt in flight is
    /// abandoned: its entry stays queued). Persisted entries are sent at the next start.
    pub async fn shutdown(mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        let _ = self.stop.send(true);
        for sender in std::mem::take(&mut self.senders) {
            let _ = sender.await;
        }
        for q in &self.shared.queues {
            let pending = lock(&q.pending);
            let in_memory = pending.iter().filter(|e| e.path.is_none()).count();
            let on_disk = pending.len() - in_memory;
            if on_disk > 0
                && let Some(dir) = &q.dir
            {
                tracing::info!(
                    channel = %q.name,
                    "{on_disk} notification(s) for {} kept in {}: sent at next start",
                    q.channel.describe(),
                    dir.display()
                );
            }
            if in_memory > 0 && q.channel.durable() {
                tracing::error!(
                    channel = %q.name,
                    "{in_memory} notification(s) for {} could not be written to the outbox and are lost",
                    q.channel.describe()
                );
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Sends each batch of `batches` through the configured notifiers, `interval` apart, and waits
/// until they (and anything left in the outbox by an earlier run) are delivered, or `timeout`
/// passes: `monitor notify-deliver`. Notifications refused for good make it an error.
pub async fn send_and_drain(
    configs: Vec<NotifierConfig>,
    options: NotifyOptions,
    outbox_dir: PathBuf,
    batches: Vec<Vec<Alert>>,
    interval: Duration,
    timeout: Duration,
) -> Result<(), NotifyError> {
    let notifier = Notifier::start(configs, options, outbox_dir, hostname(), None).await?;
    for (i, alerts) in batches.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        notifier.send(alerts);
    }
    let result = notifier.drain(timeout).await;
    let dropped = notifier.shared.dropped.load(Ordering::SeqCst);
    notifier.shutdown().await;
    result?;
    if dropped > 0 {
        return Err(NotifyError::Dropped { count: dropped });
    }
    Ok(())
}

/// The alert `monitor notify test` sends: an info that says where it comes from.
pub(crate) fn test_alert(instance: &str) -> Alert {
    let host = hostname();
    Alert {
        name: "MonitorNotifyTest".into(),
        severity: crate::alerts::Severity::Info,
        status: AlertStatus::Firing,
        labels: [("target", "monitor"), ("instance", instance)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        annotations: [
            ("summary", "Test notification from monitor".to_owned()),
            (
                "description",
                format!("Sent by `monitor notify test` on {host}: this channel works."),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        starts_at: SystemTime::now(),
        ends_at: None,
        value: 0.0,
    }
}

/// One notifier's answer to `monitor notify test`.
pub struct ChannelTest {
    pub name: String,
    /// Where it delivers (no secret shown).
    pub target: String,
    pub result: Result<(), NotifyError>,
}

/// Sends [`test_alert`] through every configured notifier at once, straight (no outbox, no
/// retry: the answer is what an operator wants to see), each bounded by the options' timeout.
pub async fn test_channels(
    configs: Vec<NotifierConfig>,
    options: NotifyOptions,
) -> Result<Vec<ChannelTest>, NotifyError> {
    options.validate()?;
    let names = config::check_notifiers(&configs)?;
    let instance = hostname();
    let ctx = Context::new(&options, instance.clone());
    let client = http::HttpClient::new(options.timeout);
    let alert = test_alert(&instance);
    let mut tests = Vec::new();
    for (config, name) in configs.iter().zip(names) {
        let test = match Channel::build(config, &name, &client, options.timeout) {
            Ok(channel) => {
                let deadline = options.timeout.saturating_mul(2);
                let result = tokio::time::timeout(
                    deadline,
                    channel.deliver(&name, std::slice::from_ref(&alert), &ctx),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(NotifyError::Timeout {
                        pending: 1,
                        timeout: deadline,
                        detail: channel.describe(),
                    })
                });
                ChannelTest {
                    target: channel.describe(),
                    name,
                    result,
                }
            }
            Err(e) => ChannelTest {
                target: config.kind().to_owned(),
                name,
                result: Err(e),
            },
        };
        tests.push(test);
    }
    Ok(tests)
}

/// Reads alerts from a JSON file: one alert object or an array of them (the serde shape of
/// [`Alert`]: times in RFC 3339).
#[cfg(test)]
pub fn read_alerts(path: &Path) -> Result<Vec<Alert>, NotifyError> {
    read_batches(path).map(|batches| batches.concat())
}

/// Reads batches of alerts from a JSON file: one alert object or an array of them (one batch),
/// or an array of arrays (successive batches).
pub fn read_batches(path: &Path) -> Result<Vec<Vec<Alert>>, NotifyError> {
    let text = std::fs::read(path).map_err(|source| NotifyError::Read {
        path: path.into(),
        source,
    })?;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Batches {
        Many(Vec<Vec<Alert>>),
        One(Vec<Alert>),
        Single(Box<Alert>),
    }
    match serde_json::from_slice::<Batches>(&text) {
        Ok(Batches::Many(batches)) => Ok(batches),
        Ok(Batches::One(alerts)) => Ok(vec![alerts]),
        Ok(Batches::Single(alert)) => Ok(vec![vec![*alert]]),
        // untagged hides the reason; the array form's error is the useful one.
        Err(_) => Err(NotifyError::AlertJson {
            path: path.into(),
            source: serde_json::from_slice::<Vec<Alert>>(&text)
                .err()
                .unwrap_or_else(|| serde_json::Error::io(std::io::Error::other("invalid"))),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alerts::Severity;

    /// 2024-03-01T12:00:00Z.
    const T0: u64 = 1_709_294_400;

    pub fn alert(name: &str) -> Alert {
        Alert {
            name: name.into(),
            severity: Severity::Warning,
            status: AlertStatus::Firing,
            labels: [("target", "trading-api"), ("instance", "host:8001")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [
                ("summary", "memory high"),
                ("description", "RSS above 1 GiB"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            starts_at: UNIX_EPOCH + Duration::from_secs(T0),
            ends_at: None,
            value: 1536.0,
        }
    }

    pub fn resolved(name: &str) -> Alert {
        Alert {
            status: AlertStatus::Resolved,
            ends_at: Some(UNIX_EPOCH + Duration::from_secs(T0 + 300)),
            ..alert(name)
        }
    }

    pub fn ctx() -> Context {
        Context {
            instance: "host:8001".into(),
            external_url: "http://host:8001".into(),
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let s = Duration::from_secs;
        let seq: Vec<_> = (0..9).map(|a| backoff(a, s(1), s(60))).collect();
        assert_eq!(
            seq,
            [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60), s(60)]
        );
        assert_eq!(backoff(u32::MAX, s(1), s(60)), s(60));
        assert_eq!(backoff(200, Duration::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn times_never_fail_to_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn alerts_from_json_one_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.json");
        std::fs::write(&one, serde_json::to_vec(&alert("A")).unwrap()).unwrap();
        assert_eq!(read_alerts(&one).unwrap(), [alert("A")]);
        let many = dir.path().join("many.json");
        std::fs::write(
            &many,
            serde_json::to_vec(&[alert("A"), resolved("B")]).unwrap(),
        )
        .unwrap();
        assert_eq!(read_alerts(&many).unwrap().len(), 2);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"[{\"name\": 1}]").unwrap();
        let e = read_alerts(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
    }

    /// A webhook receiver on loopback: records bodies, refuses alert name "Bad" with 400.
    struct Receiver {
        bodies: Arc<Mutex<Vec<serde_json::Value>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        async fn start(port: u16) -> Self {
            let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
            let store = bodies.clone();
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: bytes::Bytes| {
                    let store = store.clone();
                    async move {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        if v["groupLabels"]["alertname"] == "Bad" {
                            return axum::http::StatusCode::BAD_REQUEST;
                        }
                        store.lock().unwrap().push(v);
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self { bodies, task }
        }

        fn names(&self) -> Vec<String> {
            self.bodies
                .lock()
                .unwrap()
                .iter()
                .map(|b| b["groupLabels"]["alertname"].as_str().unwrap().to_string())
                .collect()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn fast() -> NotifyOptions {
        NotifyOptions {
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            ..NotifyOptions::default()
        }
    }

    fn hook(port: u16) -> Vec<NotifierConfig> {
        vec![
            NotifierConfig::Webhook {
                url: format!("http://127.0.0.1:{port}/hook").into(),
                url_file: None,
                name: None,
            },
            NotifierConfig::Log { name: None },
        ]
    }

    async fn start(port: u16, dir: &Path, options: NotifyOptions) -> Notifier {
        Notifier::start(
            hook(port),
            options,
            dir.to_path_buf(),
            "host:8001".into(),
            None,
        )
        .await
        .unwrap()
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_that_comes_back_gets_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let n = start(port, dir.path(), fast()).await;
        n.send(vec![alert("A")]);
        n.send(vec![alert("B"), resolved("C")]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(n.drain(Duration::ZERO).await.is_err());
        assert_eq!(files(&dir.path().join("webhook")), 3);
        let receiver = Receiver::start(port).await;
        n.drain(Duration::from_secs(5)).await.unwrap();
        assert_eq!(receiver.names(), ["A", "B", "C"]);
        assert_eq!(files(&dir.path().join("webhook")), 0);
        n.shutdown().await;
    }

    #[test]
    fn each_queued_entry_keeps_the_alerts_no_later_entry_repeats() {
        let repeat = |value| Alert {
            value,
            ..alert("A")
        };
        let entry = |seq, alerts: Vec<Alert>| Entry {
            seq,
            created: SystemTime::now(),
            alerts: alerts.into(),
            path: None,
        };
        let pending = [
            entry(1, vec![repeat(1.0), alert("B")]),
            entry(2, vec![repeat(2.0)]),
            entry(3, vec![resolved("A"), alert("B")]),
            entry(4, vec![alert("C")]),
        ];
        let keep = |first| -> Vec<Vec<String>> {
            delivery::not_superseded(&pending, first)
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|a| format!("{} {}", a.name, a.value))
                        .collect()
                })
                .collect()
        };
        // A's firing repeats collapse to the latest, B's to entry 3; the resolution stays.
        let expected: [Vec<String>; 4] = [
            vec![],
            vec!["A 2".into()],
            vec!["A 1536".into(), "B 1536".into()],
            vec!["C 1536".into()],
        ];
        assert_eq!(keep(4), expected);
        assert_eq!(keep(2), expected[..2]);
        assert_eq!(keep(9), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_repeats_collapse_to_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let n = start(port, dir.path(), fast()).await;
        let repeat = |value| Alert {
            value,
            ..alert("A")
        };
        n.send(vec![repeat(1.0)]);
        n.send(vec![repeat(2.0), alert("B")]);
        n.send(vec![repeat(3.0)]);
        n.send(vec![resolved("A")]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let receiver = Receiver::start(port).await;
        n.drain(Duration::from_secs(5)).await.unwrap();
        let bodies = receiver.bodies.lock().unwrap().clone();
        let seen: Vec<_> = bodies
            .iter()
            .map(|b| {
                let a = &b["alerts"][0];
                format!(
                    "{} {} {}",
                    a["labels"]["alertname"], a["status"], a["annotations"]["value"]
                )
            })
            .collect();
        // The first A was in flight (failing) when the others were queued: it may go out once.
        let expected = [
            "\"B\" \"firing\" \"1536\"",
            "\"A\" \"firing\" \"3\"",
            "\"A\" \"resolved\" \"1536\"",
        ];
        assert_eq!(&seen[seen.len().saturating_sub(3)..], expected, "{seen:?}");
        assert!(seen.len() <= 4, "{seen:?}");
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_notifications_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let n = start(port, dir.path(), fast()).await;
        n.send(vec![alert("A")]);
        n.send(vec![resolved("A")]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        n.shutdown().await;
        assert_eq!(files(&dir.path().join("webhook")), 2);

        let receiver = Receiver::start(port).await;
        let n = start(port, dir.path(), fast()).await;
        n.drain(Duration::from_secs(5)).await.unwrap();
        let bodies = receiver.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["status"], "firing");
        assert_eq!(bodies[1]["status"], "resolved");
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unwritable_outbox_still_delivers_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let port = free_port();
        let receiver = Receiver::start(port).await;
        let n = start(port, &file, fast()).await;
        n.send(vec![alert("A")]);
        n.drain(Duration::from_secs(5)).await.unwrap();
        assert_eq!(receiver.names(), ["A"]);
        n.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_and_stale_notifications_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let registry = Registry::new();
        let receiver = Receiver::start(port).await;
        let n = Notifier::start(
            hook(port),
            fast(),
            dir.path().to_path_buf(),
            "host:8001".into(),
            Some(&registry),
        )
        .await
        .unwrap();
        n.send(vec![alert("Bad"), alert("Good")]);
        n.drain(Duration::from_secs(5)).await.unwrap();
        assert_eq!(receiver.names(), ["Good"]);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        for line in [
            "monitor_notifications_sent_total{channel=\"webhook\"} 1",
            "monitor_notifications_sent_total{channel=\"log\"} 2",
            "monitor_notifications_dropped_total{channel=\"webhook\"} 1",
            "monitor_notifications_failed_total{channel=\"webhook\"} 1",
            "monitor_outbox_pending{channel=\"webhook\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        n.shutdown().await;

        // An entry older than max_age is dropped instead of sent.
        let stale = NotifyOptions {
            max_age: Duration::from_millis(100),
            ..fast()
        };
        let port = free_port();
        let n = start(port, dir.path(), stale.clone()).await;
        n.send(vec![alert("Old")]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        n.shutdown().await;
        let receiver = Receiver::start(port).await;
        let n = start(port, dir.path(), stale).await;
        n.drain(Duration::from_secs(5)).await.unwrap();
        assert!(receiver.names().is_empty());
        n.shutdown().await;
    }

    /// What a `tracing` subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    pub struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;

        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    impl Logs {
        /// Captures what is logged on this thread until the guard drops.
        pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(self.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    /// Current-thread runtime: the sender tasks log on the test's thread, where `Logs` listens.
    #[tokio::test]
    async fn a_failing_delivery_never_shows_the_password_of_its_url() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on the discard port: every attempt fails.
        let url = "http://alice:s3cret@127.0.0.1:9/hook";
        let configs = || {
            vec![
                NotifierConfig::Webhook {
                    url: url.into(),
                    url_file: None,
                    name: None,
                },
                NotifierConfig::Alertmanager {
                    url: url.into(),
                    url_file: None,
                    name: None,
                },
            ]
        };
        let n = Notifier::start(configs(), fast(), dir.path().into(), "h".into(), None)
            .await
            .unwrap();
        n.send(vec![alert("A")]);
        // Until both channels have failed once (a fixed wait was short on a loaded host).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while logs.text().matches(" failed").count() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let timeout = n.drain(Duration::ZERO).await.unwrap_err().to_string();
        n.shutdown().await;
        // Started again with the entries still queued: the line naming where they go.
        let n = Notifier::start(configs(), fast(), dir.path().into(), "h".into(), None)
            .await
            .unwrap();
        n.shutdown().await;

        assert!(!timeout.contains("s3cret"), "{timeout}");
        assert!(timeout.contains("alice:***@127.0.0.1:9"), "{timeout}");
        let logs = logs.text();
        assert!(!logs.contains("s3cret"), "{logs}");
        for line in [
            "POST http://alice:***@127.0.0.1:9/hook failed",
            "POST http://alice:***@127.0.0.1:9/hook/api/v2/alerts failed",
            "left in",
        ] {
            assert!(logs.contains(line), "{line:?} missing from\n{logs}");
        }
    }

    /// A token in a url_file's path or query stays out of logs and errors, failing or not.
    #[tokio::test]
    async fn a_url_from_a_file_is_used_and_never_shown_past_its_host() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let receiver = Receiver::start(port).await;
        let good = dir.path().join("good-url");
        std::fs::write(
            &good,
            format!("http://127.0.0.1:{port}/hook?access_token=T0KEN\n"),
        )
        .unwrap();
        let bad = dir.path().join("bad-url");
        std::fs::write(&bad, "http://127.0.0.1:9/robot/send?access_token=T0KEN\n").unwrap();
        let configs = vec![
            NotifierConfig::Webhook {
                url: redact::SecretUrl::default(),
                url_file: Some(good),
                name: Some("good".into()),
            },
            NotifierConfig::Webhook {
                url: redact::SecretUrl::default(),
                url_file: Some(bad),
                name: Some("bad".into()),
            },
        ];
        let outbox = dir.path().join("outbox");
        let n = Notifier::start(configs, fast(), outbox, "h".into(), None)
            .await
            .unwrap();
        n.send(vec![alert("A")]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            receiver.bodies.lock().unwrap().len(),
            1,
            "the url_file's receiver got the notification"
        );
        let timeout = n.drain(Duration::ZERO).await.unwrap_err().to_string();
        n.shutdown().await;
        let logs = logs.text();
        assert!(
            !timeout.contains("T0KEN") && !logs.contains("T0KEN"),
            "{timeout}\n{logs}"
        );
        assert!(logs.contains("http://127.0.0.1:9/***"), "{logs}");

        // Both, or neither, is refused by name.
        for (url, url_file) in [
            (redact::SecretUrl::default(), None),
            ("http://h/x".into(), Some(PathBuf::from("/f"))),
        ] {
            let e = config::check_notifiers(&[NotifierConfig::Webhook {
                url,
                url_file,
                name: None,
            }])
            .unwrap_err()
            .to_string();
            assert!(e.contains("webhook: give url or url_file"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_refused_url_is_named_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let no_scheme = vec![NotifierConfig::Webhook {
            url: "alice:s3cret@127.0.0.1:8080/hook".into(),
            url_file: None,
            name: None,
        }];
        let e = Notifier::start(no_scheme, fast(), dir.path().into(), "h".into(), None)
            .await
            .err()
            .unwrap();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("alice:***@127.0.0.1:8080/hook"), "{shown}");
    }

    #[tokio::test]
    async fn draining_with_a_timeout_past_what_instant_holds_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = start(free_port(), dir.path(), fast()).await;
        n.drain(Duration::MAX).await.unwrap();
        n.shutdown().await;
    }

    #[tokio::test]
    async fn bad_configuration_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let bad_url = vec![NotifierConfig::Alertmanager {
            url: "127.0.0.1:9093".into(),
            url_file: None,
            name: None,
        }];
        let e = Notifier::start(bad_url, fast(), dir.path().into(), "h".into(), None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("127.0.0.1:9093"), "{e}");
    }
}
