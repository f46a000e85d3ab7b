//! The API refuses a pipeline that alone renders to an agent configuration over the
//! size limit (`MAX_AGENT_CONFIG_BYTES`): no cluster could ever be sent it.

mod api_harness;

use axum::http::{Method, StatusCode};
use kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES;

use api_harness::{ADMIN, Harness};

/// A pipeline whose relabel rules repeat one anchored rule with a 128 KiB value: a small
/// request body (YAML aliases) that renders to `copies` × 128 KiB.
fn aliased_pipeline(name: &str, copies: usize) -> String {
    let value = "x".repeat(128 * 1024);
    let mut text = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
         metadata: {{name: {name}}}\nspec:\n  input: {{prometheus: {{enabled: true}}}}\n  \
         output: {{prometheusRemoteWrite: {{url: \"https://receiver.example/write\"}}}}\n  \
         processors:\n    relabelConfigs:\n      - &pad {{targetLabel: pad, replacement: \"{value}\"}}\n"
    );
    for _ in 1..copies {
        text.push_str("      - *pad\n");
    }
    text
}

/// Issue 13, finding 6: a pipeline that alone is over the configuration size limit is
/// refused when applied (422 on `spec`, naming its size and the limit) and not stored.
/// On 552c13e it was stored (201) and then sent, breaking every selected agent's stream.
#[tokio::test]
async fn a_pipeline_over_the_size_limit_alone_is_refused_when_applied() {
    let h = Harness::new().await;
    let token = h.tenant_with_token("shop").await;
    let copies = MAX_AGENT_CONFIG_BYTES / (128 * 1024) + 2;
    let body = aliased_pipeline("huge", copies);
    assert!(body.len() < 1024 * 1024, "the request itself is small");
    let answer = h
        .raw(
            Method::PUT,
            "/api/v1/pipelines/huge",
            Some(&token),
            Some(("application/yaml", body)),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    let json = answer.json();
    let field = &json["fields"][0];
    assert_eq!(field["path"], "spec", "{json}");
    let message = field["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the agent configuration is ")
            && message.contains(&format!(
                "bytes, over the limit of {MAX_AGENT_CONFIG_BYTES} bytes with this pipeline alone"
            )),
        "{message}"
    );
    let listed = h.get("/api/v1/pipelines?tenant=shop", ADMIN).await;
    assert!(!listed.text.contains("huge"), "{}", listed.text);

    // Under the limit, the same shape is stored.
    let answer = h
        .raw(
            Method::PUT,
            "/api/v1/pipelines/fits",
            Some(&token),
            Some(("application/yaml", aliased_pipeline("fits", 4))),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}
