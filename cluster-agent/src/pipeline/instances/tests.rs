use std::collections::BTreeMap;
use std::sync::Mutex;

use http::{Request, Response};
use kaas_pipeline::ProviderPolicy;
use kaas_pipeline::agent_config::AgentConfig;
use kaas_pipeline::secret::SecretString;
use kube::client::Body;

use super::*;
use crate::discovery::kubernetes::config_maps::KubernetesConfigMaps;

/// Keys held in memory, by (namespace, name, key).
#[derive(Debug, Default)]
struct Keys(Mutex<BTreeMap<(String, String, String), String>>);

impl Keys {
    fn set(&self, name: &str, key: &str, value: &str) {
        let id = ("kaas-observer".to_owned(), name.to_owned(), key.to_owned());
        self.0.lock().unwrap().insert(id, value.to_owned());
    }

    fn remove(&self, name: &str, key: &str) {
        let id = ("kaas-observer".to_owned(), name.to_owned(), key.to_owned());
        self.0.lock().unwrap().remove(&id);
    }

    fn value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let id = (namespace.to_owned(), name.to_owned(), key.to_owned());
        self.0.lock().unwrap().get(&id).cloned()
    }
}

impl SecretStore for Keys {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
        self.value(namespace, name, key).map(SecretString::new)
    }
}

impl ConfigMapStore for Keys {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self.value(namespace, name, key)
    }
}

/// An observer's configuration holding one instance: a remote-write URL from a
/// ConfigMap key, a tenant header from a Secret key.
const CONFIG: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelineInstances:
  - templateGeneration: 3
    template:
      metadata: {name: remote-write}
      spec:
        pipelineKind: MetricPipeline
        placeholders:
          - {name: url, type: url, description: Where to write., required: true}
          - {name: tenant, type: string, description: The tenant header., required: true}
        template:
          spec:
            input: {prometheus: {enabled: true}}
            output:
              prometheusRemoteWrite:
                url: "%{url}"
                headers: [{name: X-Tenant, value: "%{tenant}"}]
    instance:
      metadata: {name: shop-metrics}
      spec:
        template: {name: remote-write}
        bindings:
          url: {configMapKeyRef: {name: backend, namespace: kaas-observer, key: url}}
          tenant: {secretKeyRef: {name: backend, namespace: kaas-observer, key: tenant}}
"#;

fn context() -> ValidationContext {
    ValidationContext::observer(ProviderPolicy::agent_default())
}

fn config() -> ValidatedAgentConfig {
    AgentConfig::parse(CONFIG, &context()).expect("a valid configuration")
}

fn keys(store: &Arc<Keys>) -> InstanceKeys {
    InstanceKeys {
        secrets: store.clone(),
        config_maps: store.clone(),
    }
}

fn url_of(config: &ValidatedAgentConfig) -> Option<String> {
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name() == "shop-metrics")?;
    let output = pipeline.spec().output.prometheus_remote_write.as_ref()?;
    output.url.plain().map(str::to_owned)
}

#[test]
fn an_instance_is_rendered_with_the_keys_read_and_runs_as_a_pipeline() {
    let store = Arc::new(Keys::default());
    store.set("backend", "url", "https://mimir.shop.example/api/v1/push");
    store.set("backend", "tenant", "shop");
    let mut renderer = InstanceRenderer::default();
    let mut config = config();
    let rendered = renderer.render(&mut config, &keys(&store), &context());
    assert!(rendered.refused.is_empty(), "{:?}", rendered.refused);
    assert!(rendered.changed);
    assert!(
        config.pipeline_instances.is_empty(),
        "rendered into the lists"
    );
    assert_eq!(
        url_of(&config).as_deref(),
        Some("https://mimir.shop.example/api/v1/push")
    );
    let header = &config.pipelines[0]
        .spec()
        .output
        .prometheus_remote_write
        .as_ref()
        .unwrap()
        .headers[0];
    assert_eq!(header.value.as_ref().unwrap().expose(), "shop");
    assert_eq!(renderer.problems().count(), 0);
    // The same values again: nothing changed.
    let mut again = self::config();
    assert!(
        !renderer
            .render(&mut again, &keys(&store), &context())
            .changed
    );
}

#[test]
fn a_missing_key_is_secret_missing_naming_the_binding_and_keeps_the_last_good_rendering() {
    let store = Arc::new(Keys::default());
    store.set("backend", "tenant", "shop");
    let mut renderer = InstanceRenderer::default();
    let mut config = config();
    let rendered = renderer.render(&mut config, &keys(&store), &context());
    assert!(rendered.refused.is_empty());
    assert!(config.pipelines.is_empty(), "never rendered: nothing runs");
    let problems: Vec<&InstanceProblem> = renderer.problems().collect();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pipeline, PipelineId::metric("shop-metrics"));
    assert_eq!(problems[0].reason, ErrorReason::SecretMissing);
    assert_eq!(
        problems[0].message,
        "the instance cannot be rendered: spec.bindings[\"url\"].configMapKeyRef: ConfigMap \
         kaas-observer/backend key \"url\" does not exist; it does not run until the key exists"
    );

    store.set("backend", "url", "https://mimir.shop.example/api/v1/push");
    let mut config = self::config();
    renderer.render(&mut config, &keys(&store), &context());
    assert_eq!(renderer.problems().count(), 0);
    store.remove("backend", "url");
    let mut config = self::config();
    let rendered = renderer.render(&mut config, &keys(&store), &context());
    assert!(!rendered.changed);
    assert_eq!(
        url_of(&config).as_deref(),
        Some("https://mimir.shop.example/api/v1/push"),
        "the last good rendering keeps running"
    );
    let problem = renderer.problems().next().expect("still reported");
    assert!(problem.last_good_runs);
    assert!(
        problem
            .message
            .ends_with("its last good rendering keeps running")
    );
}

#[test]
fn a_refused_value_names_the_binding_never_the_value_and_keeps_the_last_good_rendering() {
    let store = Arc::new(Keys::default());
    store.set("backend", "url", "https://mimir.shop.example/api/v1/push");
    store.set("backend", "tenant", "shop");
    let mut renderer = InstanceRenderer::default();
    renderer.render(&mut config(), &keys(&store), &context());

    store.set("backend", "tenant", "shop\nX-Injected: hunter2");
    let mut config = config();
    let rendered = renderer.render(&mut config, &keys(&store), &context());
    assert_eq!(rendered.refused.len(), 1, "{:?}", rendered.refused);
    let (pipeline, errors) = &rendered.refused[0];
    assert_eq!(pipeline, &PipelineId::metric("shop-metrics"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(r#"spec.bindings["tenant"]"#),
        "{errors:?}"
    );
    assert!(!errors[0].contains("hunter2"), "{errors:?}");
    let header = &config.pipelines[0]
        .spec()
        .output
        .prometheus_remote_write
        .as_ref()
        .unwrap()
        .headers[0];
    assert_eq!(
        header.value.as_ref().unwrap().expose(),
        "shop",
        "the last good rendering is kept"
    );
}

#[test]
fn instances_outside_the_allowed_namespaces_are_refused_before_any_key_is_read() {
    let outside = CONFIG.replace(
        "url: {configMapKeyRef: {name: backend, namespace: kaas-observer",
        "url: {configMapKeyRef: {name: backend, namespace: kube-system",
    );
    let error = AgentConfig::parse(&outside, &context())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            r#"pipelineInstances[0].instance.spec.bindings["url"].configMapKeyRef.namespace"#
        ),
        "{error}"
    );
}

/// Rotation: a watch event on the ConfigMap moves the URL at the next rendering.
#[tokio::test]
async fn a_changed_config_map_is_rendered_at_the_next_refresh() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let config_maps = Arc::new(KubernetesConfigMaps::watch(
        &client,
        ["kaas-observer".to_owned()],
    ));
    let secrets = Arc::new(Keys::default());
    secrets.set("backend", "tenant", "shop");
    let keys = InstanceKeys {
        secrets,
        config_maps: config_maps.clone(),
    };
    let config_map = |url: &str, version: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "backend", "namespace": "kaas-observer", "resourceVersion": version},
            "data": {"url": url}
        })
    };
    let (request, send) = handle.next_request().await.expect("a list request");
    assert_eq!(
        request.uri().path(),
        "/api/v1/namespaces/kaas-observer/configmaps"
    );
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "1"},
        "items": [config_map("https://prometheus.shop.example/api/v1/write", "1")]
    });
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).unwrap(),
    )));
    let seen = |expected: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while config_maps
                .get("kaas-observer", "backend", "url")
                .as_deref()
                != Some(expected)
            {
                assert!(std::time::Instant::now() < until, "never saw {expected}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    seen("https://prometheus.shop.example/api/v1/write").await;
    let mut renderer = InstanceRenderer::default();
    let mut first = config();
    renderer.render(&mut first, &keys, &context());
    assert_eq!(
        url_of(&first).as_deref(),
        Some("https://prometheus.shop.example/api/v1/write")
    );

    let (_, send) = handle.next_request().await.expect("a watch request");
    let event = serde_json::json!({
        "type": "MODIFIED",
        "object": config_map("https://victoria.shop.example/api/v1/write", "2")
    });
    let mut body = serde_json::to_vec(&event).unwrap();
    body.push(b'\n');
    send.send_response(Response::new(Body::from(body)));
    seen("https://victoria.shop.example/api/v1/write").await;
    let mut refreshed = config();
    let rendered = renderer.render(&mut refreshed, &keys, &context());
    assert!(
        rendered.changed,
        "the refresh applies the configuration again"
    );
    assert_eq!(
        url_of(&refreshed).as_deref(),
        Some("https://victoria.shop.example/api/v1/write")
    );
}
