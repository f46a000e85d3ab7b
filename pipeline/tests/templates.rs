//! `PipelineTemplate`s: every rejected template has a fixture in `testdata/templates/bad/`
//! paired here with the exact messages it must produce, every rule the template
//! validation states has such a fixture, and the bundled templates in
//! `examples/templates/` are accepted and render.
//!
//! Fixtures are validated under the observer's default policy, except `provider-*`,
//! whose provider also names its central receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::templates::{
    KeyValues, PipelineInstance, PlaceholderType, ValidatedTemplate, parse_templates, render,
    validate_instance,
};
use kaas_pipeline::{ProviderPolicy, ValidationContext};

mod support;

fn context_for(name: &str) -> ValidationContext {
    let mut policy = ProviderPolicy::tenant_default();
    if name.starts_with("provider-") {
        policy.central_endpoints = vec![
            url::Url::parse("https://receive.provider.example:19291/api/v1/receive")
                .expect("a URL"),
        ];
    }
    ValidationContext::observer(policy)
}

/// Fixture file name → every message it must produce, in order.
const BAD: &[(&str, &[&str])] = &[
    (
        "credential-placeholder-not-secret.yaml",
        &[
            "spec.template.spec.output.otlp.authentication.bearerToken.value: credentials and TLS material come from Secrets only: declare %{token} with type secret",
        ],
    ),
    (
        "default-not-a-quantity.yaml",
        &["spec.placeholders[1].default: \"lots\" is not a quantity: e.g. 512Mi, 1Gi or 1048576"],
    ),
    (
        "default-not-a-url.yaml",
        &[
            "spec.placeholders[0].default: \"otlp.example:4317\" is not a url: an absolute http(s) URL without credentials in it",
        ],
    ),
    (
        "example-not-a-duration.yaml",
        &[
            "spec.placeholders[1].example: \"5 minutes\" is not a duration: a number and a unit (ms, s, m, h, d, w, y)",
        ],
    ),
    (
        "optional-placeholder-without-default.yaml",
        &[
            "spec.placeholders[1]: an optional placeholder needs a default, which instances that do not bind it get; set a default or required: true",
        ],
    ),
    (
        "pipeline-kind-unknown.yaml",
        &[
            "spec.pipelineKind: unknown variant `SpanPipeline`, expected one of `MetricPipeline`, `LogPipeline`, `TracePipeline`",
        ],
    ),
    (
        "placeholder-declared-twice.yaml",
        &["spec.placeholders[1].name: %{endpoint} is declared twice"],
    ),
    (
        "placeholder-declared-unused.yaml",
        &[
            "spec.placeholders[1].name: %{tenant} is declared but used nowhere in spec.template.spec",
        ],
    ),
    (
        "placeholder-description-missing.yaml",
        &[
            "spec.placeholders[0].description: required: say what the tenant binds, e.g. \"the backend's OTLP endpoint\"",
        ],
    ),
    (
        "placeholder-description-too-long.yaml",
        &["spec.placeholders[0].description: longer than 1024 bytes; keep it to a few sentences"],
    ),
    (
        "placeholder-in-enum-field.yaml",
        &[
            "spec.template.spec.output.otlp.protocol: unknown variant `sample`, expected `grpc` or `http` (checked with the sample of %{protocol})",
        ],
    ),
    (
        "placeholder-in-header-name.yaml",
        &[
            "spec.template.spec.output.otlp.headers[0].name: a header name cannot be a placeholder: the agent's and the provider's reserved headers are refused where the template is written; make the header's value the placeholder",
        ],
    ),
    (
        "placeholder-in-label-name.yaml",
        &[
            "spec.template.spec.processors.relabelConfigs[0].targetLabel: a label name cannot be a placeholder: reserved and sealed labels are refused where the template is written; make a label's value the placeholder",
        ],
    ),
    (
        "placeholder-in-map-key.yaml",
        &[
            "spec.template.spec.clusterSelector.matchLabels[\"%{team}\"]: placeholders stand in values only, never in field names or map keys",
            "spec.placeholders[1].name: %{team} is declared but used nowhere in spec.template.spec",
        ],
    ),
    (
        "placeholder-name-invalid.yaml",
        &[
            "spec.placeholders[1].name: \"2nd\" is not a placeholder name: a letter followed by letters, digits or '_', at most 63 long",
            "spec.placeholders[1].name: %{2nd} is declared but used nowhere in spec.template.spec",
        ],
    ),
    (
        "placeholder-name-malformed.yaml",
        &[
            "spec.template.spec.output.otlp.endpoint: %{ endpoint } is not a placeholder: a name is a letter followed by letters, digits or '_', at most 63 long; write \"%%{\" for a literal \"%{\"",
            "spec.placeholders[0].name: %{endpoint} is declared but used nowhere in spec.template.spec",
        ],
    ),
    (
        "placeholder-unclosed.yaml",
        &[
            "spec.template.spec.output.otlp.endpoint: \"%{\" opens a placeholder that is never closed with \"}\"; write \"%%{\" for a literal \"%{\" (found \"%{endpoint\")",
            "spec.placeholders[0].name: %{endpoint} is declared but used nowhere in spec.template.spec",
        ],
    ),
    (
        "placeholder-undeclared.yaml",
        &[
            "spec.template.spec.output.otlp.headers[0].value: %{tenant} is not declared: add it to spec.placeholders",
        ],
    ),
    (
        "provider-central-endpoint-as-example.yaml",
        &[
            "spec.template.spec.output.otlp.endpoint: this is the provider's central receiver, which only the provider's own pipeline writes to; send to your own backend (checked with the sample of %{url})",
        ],
    ),
    (
        "sample-refused-where-it-stands.yaml",
        &[
            "spec.template.spec.output.otlp.endpoint: an OTLP/gRPC endpoint has no path, found \"/v1/traces\"; use scheme://host:port, or set protocol: http (checked with the sample of %{base})",
        ],
    ),
    (
        "secret-placeholder-not-a-value.yaml",
        &[
            "spec.template.spec.output.otlp.endpoint: the secret placeholder %{endpoint} stands only as the value of a credential, TLS material or header, where valueFrom.secretKeyRef is accepted (and valueFrom is not set beside it)",
        ],
    ),
    (
        "secret-placeholder-not-required.yaml",
        &[
            "spec.placeholders[1].required: a secret placeholder is always required: set required: true",
        ],
    ),
    (
        "secret-placeholder-part-of-text.yaml",
        &[
            "spec.template.spec.output.otlp.headers[0].value: the secret placeholder %{token} must be the whole value: it becomes a reference to a Secret key, never part of a text",
        ],
    ),
    (
        "secret-placeholder-where-text-goes.yaml",
        &[
            "spec.template.spec.processors.attributes[0].value: the secret placeholder %{salt} stands where no valueFrom.secretKeyRef is accepted: this value is plain text",
        ],
    ),
    (
        "secret-placeholder-with-default.yaml",
        &[
            "spec.placeholders[1].default: a secret placeholder has no value in the template: each instance binds it to a Secret key, which only the agent reads",
        ],
    ),
    (
        "template-spec-missing.yaml",
        &[
            "spec.template.spec: required: the TracePipeline spec the template produces, as an object",
        ],
    ),
    (
        "template-spec-unknown-field.yaml",
        &[
            "spec.template.spec.exporters: unknown field `exporters`, expected one of `input`, `sampling`, `processors`, `output`, `buffer`, `clusterSelector`",
        ],
    ),
    (
        "too-many-placeholders.yaml",
        &[
            "spec.placeholders: 34 placeholders, more than 32: a template is a short form for tenants; split it or fix values in the spec",
        ],
    ),
    (
        "too-many-uses.yaml",
        &["spec.template.spec: placeholders stand in 129 places, more than 128"],
    ),
];

fn dir(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn there_are_at_least_fifteen_rejected_templates() {
    assert!(BAD.len() >= 15, "only {} bad template fixtures", BAD.len());
}

#[test]
fn every_bad_template_is_paired_with_its_messages() {
    support::assert_paired(&dir("testdata/templates/bad"), BAD);
}

#[test]
fn bad_templates_are_refused_with_their_messages() {
    support::assert_refused(&dir("testdata/templates/bad"), BAD, |name, text| {
        parse_templates(text, &context_for(name))
    });
}

#[test]
fn every_message_names_a_field_and_a_reason() {
    for (name, expected) in BAD {
        for message in *expected {
            let (path, reason) = message
                .split_once(": ")
                .unwrap_or_else(|| panic!("{name}: {message:?} has no path"));
            assert!(path.starts_with("spec."), "{name}: path {path:?}");
            assert!(reason.len() > 5, "{name}: reason {reason:?}");
        }
    }
}

/// Every rule the template validation states (each `errors.add` with a message written
/// in `src/templates/`, outside the instance module, whose refusals are tested there)
/// has a fixture whose expected message carries that message's fixed text.
#[test]
fn every_template_rule_has_a_fixture() {
    let sources: Vec<PathBuf> = support::sources_in("src/templates")
        .into_iter()
        .filter(|path| !path.ends_with("instance.rs"))
        .collect();
    let expected: Vec<&str> = BAD
        .iter()
        .flat_map(|(_, lines)| lines.iter().copied())
        .collect();
    support::assert_every_rule_has_a_fixture(&sources, &expected, 15);
}

fn template(path: &Path) -> ValidatedTemplate {
    let text = fs::read_to_string(path).expect("readable template");
    let mut documents = parse_templates(&text, &ValidationContext::tenant_default());
    assert_eq!(documents.len(), 1, "{}", path.display());
    match documents.remove(0).outcome {
        Ok(template) => template,
        Err(errors) => panic!("{}: {errors}", path.display()),
    }
}

fn instance(yaml: &str) -> kaas_pipeline::templates::ValidatedInstance {
    let resource: PipelineInstance = serde_yaml::from_str(yaml).expect("an instance");
    validate_instance(&resource, &ValidationContext::tenant_default()).expect("a valid instance")
}

/// An instance of `template` binding every required placeholder: secrets to keys of one
/// binding Secret, others to their example.
fn instance_of(template: &ValidatedTemplate) -> kaas_pipeline::templates::ValidatedInstance {
    let mut bindings = BTreeMap::new();
    for placeholder in template.placeholders().iter().filter(|p| p.required) {
        let binding = match placeholder.type_ {
            PlaceholderType::Secret => serde_json::json!({"secretKeyRef": {
                "name": "binding", "namespace": "kaas-observer", "key": placeholder.name}}),
            _ => serde_json::json!({"value": placeholder.sample()}),
        };
        bindings.insert(placeholder.name.clone(), binding);
    }
    let document = serde_json::json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "PipelineInstance",
        "metadata": {"name": format!("my-{}", template.name())},
        "spec": {"template": {"name": template.name()}, "bindings": bindings},
    });
    instance(&serde_json::to_string(&document).expect("JSON"))
}

#[test]
fn bundled_templates_are_accepted_and_render() {
    let examples = dir("../examples/templates");
    let names = support::files_in(&examples);
    assert_eq!(
        names,
        BTreeSet::from(
            [
                "elasticsearch-dedot.yaml",
                "grafana-cloud-remote-write.yaml",
                "otlp-oauth2.yaml"
            ]
            .map(str::to_owned)
        )
    );
    let mut kinds = BTreeSet::new();
    for name in names {
        let template = template(&examples.join(&name));
        let instance = instance_of(&template);
        let pipeline = rendered_from(&template, 1, &instance);
        assert_eq!(pipeline.name(), format!("my-{}", template.name()));
        assert!(
            !pipeline_secret_names(&pipeline).is_empty(),
            "{name}: its credentials come from the binding Secret"
        );
        kinds.insert(pipeline.kind());
    }
    assert_eq!(kinds.len(), 3, "one bundled template per pipeline kind");
}

fn pipeline_secret_names(pipeline: &ValidatedResource) -> Vec<String> {
    let refs = match pipeline {
        ValidatedResource::Metric(p) => p.secret_refs(),
        ValidatedResource::Log(p) => p.secret_refs(),
        ValidatedResource::Trace(p) => p.secret_refs(),
    };
    refs.into_iter().map(|r| r.name.clone()).collect()
}

/// The complete pipeline `instance` renders to from `generation` of `template`, as the
/// observer renders it.
fn rendered_from(
    template: &ValidatedTemplate,
    generation: i64,
    instance: &kaas_pipeline::templates::ValidatedInstance,
) -> ValidatedResource {
    let rendered = render(
        template,
        generation,
        instance,
        KeyValues::Deferred,
        &ValidationContext::tenant_default(),
    )
    .expect("renders");
    assert_eq!(rendered.generation(), generation);
    rendered.into_pipeline().expect("complete")
}

#[test]
fn the_bundled_instance_narrows_the_oauth2_template_to_the_shop() {
    let examples = dir("../examples/templates");
    let template = template(&examples.join("otlp-oauth2.yaml"));
    let text = fs::read_to_string(examples.join("instances/shop-traces.yaml")).expect("readable");
    let mut documents =
        kaas_pipeline::templates::parse_instances(&text, &ValidationContext::tenant_default());
    let instance = documents.remove(0).outcome.expect("a valid instance");
    let ValidatedResource::Trace(pipeline) = rendered_from(&template, 7, &instance) else {
        panic!("a TracePipeline");
    };
    assert_eq!(
        pipeline.spec().input.namespaces.include,
        ["shop", "shop-staging"]
    );
    let oauth2 = pipeline
        .spec()
        .output
        .otlp
        .as_ref()
        .unwrap()
        .authentication
        .as_ref()
        .unwrap();
    let oauth2 = oauth2.oauth2.as_ref().expect("oauth2");
    assert_eq!(oauth2.token_url, "https://auth.shop.example/oauth2/token");
    assert_eq!(
        oauth2.client_secret.secret_ref().expect("a reference").key,
        "client-secret"
    );
    assert_eq!(oauth2.scopes, ["telemetry.write"], "the default");
}

#[test]
fn the_elasticsearch_template_de_dots_and_keeps_its_index_specifiers() {
    let template = template(&dir("../examples/templates/elasticsearch-dedot.yaml"));
    let instance = instance(
        r#"
metadata: {name: shop-logs}
spec:
  template: {name: elasticsearch-dedot}
  bindings:
    url: {value: "https://es.shop.example:9200"}
    user: {secretKeyRef: {name: es-binding, namespace: kaas-observer, key: username}}
    password: {secretKeyRef: {name: es-binding, namespace: kaas-observer, key: password}}
    indexPrefix: {value: shop}
"#,
    );
    let ValidatedResource::Log(pipeline) = rendered_from(&template, 2, &instance) else {
        panic!("a LogPipeline");
    };
    assert!(pipeline.dedot());
    let http = pipeline.spec().output.http.as_ref().expect("http output");
    assert_eq!(http.index.as_deref(), Some("shop-%Y.%m.%d"));
    assert_eq!(http.url, "https://es.shop.example:9200");
    let annotations = pipeline
        .resource()
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(
        annotations["telemetry.kaas-observer.io/template"],
        "elasticsearch-dedot"
    );
    assert_eq!(
        annotations["telemetry.kaas-observer.io/template-generation"],
        "2"
    );
}

#[test]
fn relabel_replacements_survive_templating_unchanged() {
    let template = template(&dir(
        "testdata/templates/good/relabel-replacement-survives.yaml",
    ));
    let instance = instance(
        r#"
metadata: {name: shop-metrics}
spec:
  template: {name: relabel-survives}
  bindings:
    url: {value: "https://mimir.example/api/v1/push"}
    team: {value: "%{url}"}
"#,
    );
    let ValidatedResource::Metric(pipeline) = rendered_from(&template, 1, &instance) else {
        panic!("a MetricPipeline");
    };
    let rules = &pipeline.spec().processors.relabel_configs;
    let replacements: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.replacement.as_deref())
        .collect();
    assert_eq!(
        replacements,
        ["${1}/$2", "$1", "%{url}-$$-%Y-%{literal}"],
        "relabeling's $ syntax is untouched, the escape is a literal %{{, and a bound value \
         holding placeholder syntax is not expanded again"
    );
}
