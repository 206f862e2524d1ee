//! Prometheus Alertmanager, API v2: `POST {url}/api/v2/alerts` with a JSON array of postable
//! alerts. Firing alerts carry no `endsAt`: Alertmanager then resolves them itself after its
//! `resolve_timeout` unless they are sent again, which is why the engine repeats firing alerts.
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

/// One element of the body, as Alertmanager's OpenAPI spec names the fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

pub fn body(alerts: &[Alert], ctx: &Context) -> Vec<PostableAlert> {
    alerts
        .iter()
        .map(|a| PostableAlert {
            labels: labels_with_instance(a, &ctx.instance),
            annotations: annotations_with_value(a),
            starts_at: rfc3339(a.starts_at),
            ends_at: match a.status {
                AlertStatus::Firing => None,
                // A resolved alert without its end time ended now, as far as anyone can tell.
                AlertStatus::Resolved => Some(rfc3339(
                    a.ends_at.unwrap_or_else(std::time::SystemTime::now),
                )),
            },
            generator_url: ctx.external_url.clone(),
        })
        .collect()
}

#[derive(Debug)]
pub struct AlertmanagerChannel {
    /// The configured base URL (for messages, which show it without its password).
    pub base: SecretUrl,
    endpoint: SecretUrl,
    client: HttpClient,
}

impl AlertmanagerChannel {
    pub fn new(base: &SecretUrl, client: HttpClient) -> Self {
        Self {
            base: base.clone(),
            endpoint: format!("{}/api/v2/alerts", base.expose().trim_end_matches('/')).into(),
            client,
        }
    }

    pub async fn deliver(&self, alerts: &[Alert], ctx: &Context) -> Result<(), HttpError> {
        // Serializing maps of strings cannot fail.
        let json = serde_json::to_vec(&body(alerts, ctx)).unwrap_or_default();
        self.client.post_json(&self.endpoint, json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::{alert, ctx, resolved};

    #[test]
    fn body_has_the_api_v2_shape() {
        let v =
            serde_json::to_value(body(&[alert("HighMemory"), resolved("Down")], &ctx())).unwrap();
        let firing = &v[0];
        let keys: Vec<_> = firing.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["annotations", "generatorURL", "labels", "startsAt"]);
        assert_eq!(firing["labels"]["alertname"], "HighMemory");
        assert_eq!(firing["labels"]["severity"], "warning");
        assert_eq!(firing["labels"]["target"], "trading-api");
        assert_eq!(firing["labels"]["instance"], "host:8001");
        assert_eq!(firing["annotations"]["summary"], "memory high");
        assert_eq!(firing["annotations"]["value"], "1536");
        assert_eq!(firing["startsAt"], "2024-03-01T12:00:00.000Z");
        assert_eq!(firing["generatorURL"], "http://host:8001");
        assert_eq!(v[1]["endsAt"], "2024-03-01T12:05:00.000Z");
        assert_eq!(v[1]["labels"]["alertname"], "Down");
    }
}
