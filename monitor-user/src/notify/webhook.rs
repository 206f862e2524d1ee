//! A webhook in Alertmanager's own webhook body shape (version 4), so receivers written for
//! Alertmanager (chat bridges and the like) take monitor's notifications unchanged.
//!
//! Alertmanager groups alerts by route labels; this sends one POST per alert name (as
//! `group_by: [alertname]` would), which is what the queue entries of this channel hold.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    Context, annotations_with_value,
    http::{HttpClient, HttpError},
    labels_with_instance,
    redact::SecretUrl,
    rfc3339,
};
use crate::alerts::{Alert, AlertStatus};

/// What Alertmanager writes for a zero `time.Time`: a firing alert's `endsAt`.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    pub version: &'static str,
    pub group_key: String,
    pub truncated_alerts: u64,
    pub status: &'static str,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

fn status_str(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

/// Splits a batch the way it is sent: one group per alert name, in first-seen order.
pub fn groups(alerts: &[Alert]) -> Vec<Vec<Alert>> {
    let mut groups: Vec<Vec<Alert>> = Vec::new();
    for alert in alerts {
        match groups.iter_mut().find(|g| g[0].name == alert.name) {
            Some(group) => group.push(alert.clone()),
            None => groups.push(vec![alert.clone()]),
        }
    }
    groups
}

/// The body for one group (alerts of one name); `receiver` is the channel's name.
pub fn body(alerts: &[Alert], receiver: &str, ctx: &Context) -> WebhookBody {
    let items: Vec<WebhookAlert> = alerts
        .iter()
        .map(|a| {
            let labels = labels_with_instance(a, &ctx.instance);
            WebhookAlert {
                status: status_str(a.status),
                fingerprint: fingerprint(&labels),
                labels,
                annotations: annotations_with_value(a),
                starts_at: rfc3339(a.starts_at),
                ends_at: match a.status {
                    AlertStatus::Firing => ZERO_TIME.to_string(),
                    AlertStatus::Resolved => {
                        rfc3339(a.ends_at.unwrap_or_else(std::time::SystemTime::now))
                    }
                },
                generator_url: ctx.external_url.clone(),
            }
        })
        .collect();
    // Alertmanager's rule: the group fires while any of its alerts does.
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        "firing"
    } else {
        "resolved"
    };
    let group_labels: BTreeMap<String, String> = alerts
        .first()
        .map(|a| [("alertname".to_string(), a.name.clone())].into())
        .unwrap_or_default();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    WebhookBody {
        version: "4",
        group_key,
        truncated_alerts: 0,
        status,
        receiver: receiver.to_string(),
        group_labels,
        common_labels: common(items.iter().map(|a| &a.labels)),
        common_annotations: common(items.iter().map(|a| &a.annotations)),
        external_url: ctx.external_url.clone(),
        alerts: items,
    }
}

/// The pairs every map has, with the same value.
fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut common = maps.next().cloned().unwrap_or_default();
    for map in maps {
        common.retain(|k, v| map.get(k) == Some(v));
    }
    common
}

/// Alertmanager's alert fingerprint (Prometheus' `LabelSet.Fingerprint`): FNV-1a 64 over the
/// sorted label names and values, each followed by the 0xff separator, as 16 hex digits. The
/// same labels get the same fingerprint from monitor and from Alertmanager.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    // BTreeMap iterates in byte order of the names, as Go's sort.Strings does.
    for (name, value) in labels {
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

#[derive(Debug)]
pub struct WebhookChannel {
    pub url: SecretUrl,
    receiver: String,
    client: HttpClient,
}

impl WebhookChannel {
    pub fn new(url: &SecretUrl, receiver: &str, client: HttpClient) -> Self {
        Self {
            url: url.clone(),
            receiver: receiver.to_string(),
            client,
        }
    }

    /// Sends one entry: the alerts of one name (see [`groups`]).
    pub async fn deliver(&self, alerts: &[Alert], ctx: &Context) -> Result<(), HttpError> {
        let json = serde_json::to_vec(&body(alerts, &self.receiver, ctx)).unwrap_or_default();
        self.client.post_json(&self.url, json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, ctx, resolved};

    #[test]
    fn body_has_the_alertmanager_webhook_shape() {
        let mut second = alert("HighMemory");
        second.labels.insert("target".into(), "other-api".into());
        let v =
            serde_json::to_value(body(&[alert("HighMemory"), second], "webhook", &ctx())).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "alerts",
                "commonAnnotations",
                "commonLabels",
                "externalURL",
                "groupKey",
                "groupLabels",
                "receiver",
                "status",
                "truncatedAlerts",
                "version"
            ]
        );
        assert_eq!(v["version"], "4");
        assert_eq!(v["groupKey"], "{}:{alertname=\"HighMemory\"}");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "webhook");
        assert_eq!(
            v["groupLabels"],
            serde_json::json!({"alertname": "HighMemory"})
        );
        assert_eq!(v["commonLabels"]["severity"], "warning");
        assert!(v["commonLabels"].get("target").is_none());
        assert_eq!(v["commonAnnotations"]["summary"], "memory high");
        assert_eq!(v["externalURL"], "http://host:8001");
        let a = &v["alerts"][0];
        let keys: Vec<_> = a.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        assert_eq!(a["status"], "firing");
        assert_eq!(a["endsAt"], ZERO_TIME);
        assert_eq!(a["startsAt"], "2024-03-01T12:00:00.000Z");
        assert_eq!(a["labels"]["target"], "trading-api");
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);

        let v = serde_json::to_value(body(&[resolved("Down")], "hook", &ctx())).unwrap();
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alerts"][0]["status"], "resolved");
        assert_eq!(v["alerts"][0]["endsAt"], "2024-03-01T12:05:00.000Z");
    }

    #[test]
    fn fingerprint_matches_prometheus() {
        // The empty label set hashes to FNV-1a's offset basis.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        // As Alertmanager 0.25 reported for these labels (GET /api/v2/alerts).
        let labels: BTreeMap<String, String> = [
            ("alertname", "HighMemory"),
            ("instance", "host:8001"),
            ("severity", "warning"),
            ("target", "trading-api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(fingerprint(&labels), FINGERPRINT_FROM_ALERTMANAGER);
    }

    const FINGERPRINT_FROM_ALERTMANAGER: &str = "9ca6cb2d188bf313";

    #[test]
    fn groups_by_alert_name_in_order() {
        let g = groups(&[alert("A"), alert("B"), resolved("A")]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].len(), 2);
        assert_eq!(g[1][0].name, "B");
    }
}
