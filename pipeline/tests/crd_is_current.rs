//! The CRDs under `deploy/crds/` must be exactly what the Rust types generate.
//! Set `KAAS_UPDATE_GENERATED=1` to rewrite it instead of comparing.

use std::fs;
use std::path::Path;

use kaas_pipeline::crd::{
    CRD_FILE_NAME, INSTANCE_CRD_FILE_NAME, LOG_CRD_FILE_NAME, TEMPLATE_CRD_FILE_NAME,
    TRACE_CRD_FILE_NAME, crd_yaml, instance_crd_yaml, log_crd_yaml, template_crd_yaml,
    trace_crd_yaml,
};

fn check_committed(file_name: &str, fresh: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/crds")
        .join(file_name);
    if std::env::var_os("KAAS_UPDATE_GENERATED").is_some() {
        fs::write(&path, fresh).expect("the CRD file is writable");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "deploy/crds/{file_name} is out of date; run \
         KAAS_UPDATE_GENERATED=1 cargo test -p kaas-pipeline --test crd_is_current"
    );
}

#[test]
fn committed_crd_matches_the_rust_types() {
    check_committed(CRD_FILE_NAME, &crd_yaml().unwrap());
}

#[test]
fn committed_log_crd_matches_the_rust_types() {
    check_committed(LOG_CRD_FILE_NAME, &log_crd_yaml().unwrap());
}

#[test]
fn committed_trace_crd_matches_the_rust_types() {
    check_committed(TRACE_CRD_FILE_NAME, &trace_crd_yaml().unwrap());
}

#[test]
fn committed_template_crd_matches_the_rust_types() {
    check_committed(TEMPLATE_CRD_FILE_NAME, &template_crd_yaml().unwrap());
}

#[test]
fn committed_instance_crd_matches_the_rust_types() {
    check_committed(INSTANCE_CRD_FILE_NAME, &instance_crd_yaml().unwrap());
}

#[test]
fn template_crd_keeps_the_pipeline_spec_open_for_placeholders() {
    let crd: serde_json::Value = serde_yaml::from_str(&template_crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "PipelineTemplate");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    walk_structural(spec, "spec");
    assert_eq!(
        spec["required"],
        serde_json::json!(["pipelineKind"]),
        "the kind is required"
    );
    let body = &spec["properties"]["template"]["properties"]["spec"];
    assert_eq!(body["type"], "object");
    assert_eq!(body["x-kubernetes-preserve-unknown-fields"], true);
    let placeholder = &spec["properties"]["placeholders"]["items"]["properties"];
    for field in [
        "name",
        "type",
        "description",
        "default",
        "example",
        "required",
    ] {
        assert!(placeholder[field].is_object(), "{field}");
    }
}

#[test]
fn instance_crd_shows_the_template_and_its_generation() {
    let crd: serde_json::Value = serde_yaml::from_str(&instance_crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "PipelineInstance");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["jsonPath"].as_str().unwrap())
        .collect();
    assert!(columns.contains(&".spec.template.name"), "{columns:?}");
    assert!(
        columns.contains(&".status.templateGeneration"),
        "{columns:?}"
    );
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    walk_structural(&schema["spec"], "spec");
    assert!(schema["status"]["properties"]["templateGeneration"].is_object());
    let binding = &schema["spec"]["properties"]["bindings"]["additionalProperties"]["properties"];
    for field in ["value", "secretKeyRef", "configMapKeyRef", "default"] {
        assert!(binding[field].is_object(), "{field}");
    }
}

#[test]
fn trace_crd_names_the_trace_kind_and_its_sections() {
    let crd: serde_json::Value = serde_yaml::from_str(&trace_crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "TracePipeline");
    assert_eq!(crd["spec"]["names"]["plural"], "tracepipelines");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    walk_structural(spec, "spec");
    let spec = &spec["properties"];
    let output = &spec["output"]["properties"];
    assert!(output["otlp"]["properties"]["endpoint"].is_object());
    assert_eq!(output.as_object().map(|o| o.len()), Some(1), "otlp only");
    let input = &spec["input"]["properties"];
    assert!(input["otlp"]["properties"]["enabled"].is_object());
    assert!(input["zipkin"]["properties"]["enabled"].is_object());
    assert!(input["namespaces"]["properties"]["exclude"].is_object());
    assert_eq!(
        spec["sampling"]["properties"]["ratio"]["type"], "number",
        "a ratio is a plain number: 0.1"
    );
    let processors = &spec["processors"]["properties"];
    for section in ["dropSpans", "attributes", "hashKey", "rateLimit"] {
        assert!(processors[section].is_object(), "{section}");
    }
}

#[test]
fn log_crd_names_the_log_kind_and_its_outputs() {
    let crd: serde_json::Value = serde_yaml::from_str(&log_crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "LogPipeline");
    assert_eq!(crd["spec"]["names"]["plural"], "logpipelines");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let output = &spec["properties"]["output"]["properties"];
    assert!(output["otlp"]["properties"]["endpoint"].is_object());
    assert!(output["loki"]["properties"]["url"].is_object());
    assert!(output["http"]["properties"]["url"].is_object());
    let runtime = &spec["properties"]["input"]["properties"]["runtime"]["properties"];
    assert!(runtime["keepOriginalBody"].is_object());
    assert!(runtime["containers"]["properties"]["include"].is_object());
}

/// Every object in the schema declares a type or is int-or-string; the API server
/// refuses non-structural schemas.
fn walk_structural(node: &serde_json::Value, path: &str) {
    if let Some(object) = node.as_object() {
        if object.contains_key("properties") {
            assert_eq!(object.get("type"), Some(&"object".into()), "{path}");
        }
        for (key, child) in object {
            walk_structural(child, &format!("{path}.{key}"));
        }
    } else if let Some(items) = node.as_array() {
        for item in items {
            walk_structural(item, path);
        }
    }
}

#[test]
fn crd_schema_is_structural_enough_for_the_api_server() {
    let crd: serde_json::Value = serde_yaml::from_str(&crd_yaml().unwrap()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    walk_structural(spec, "spec");
    let output = &spec["properties"]["output"]["properties"];
    assert!(output["prometheusRemoteWrite"]["properties"]["url"].is_object());
    assert!(output["otlp"]["properties"]["endpoint"].is_object());
    assert_eq!(
        spec["properties"]["buffer"]["properties"]["maxBytes"]["x-kubernetes-int-or-string"],
        true
    );
}
