//! The API refuses a pipeline that alone renders to an agent configuration over the
//! size limit (`MAX_AGENT_CONFIG_BYTES`): no cluster could ever be sent it; and a body
//! whose YAML aliases expand past any pipeline is refused while it is read.

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

/// Issue 13, "Limits with named defaults" (API body size): a small YAML body whose
/// aliases expand far past any pipeline is refused while it is read (400, naming the
/// bound), before the expansion is built. On 552c13e serde_yaml built the whole
/// expansion (here 128 MiB from a 140 KiB body; a 2 MB body could ask for hundreds of
/// GB) and only then validated it.
#[tokio::test]
async fn an_alias_bomb_is_refused_while_it_is_read() {
    let h = Harness::new().await;
    let token = h.tenant_with_token("shop").await;
    let body = aliased_pipeline("bomb", 1_024);
    assert!(body.len() < 160 * 1024, "the request itself is small");
    let answer = h
        .raw(
            Method::PUT,
            "/api/v1/pipelines/bomb",
            Some(&token),
            Some(("application/yaml", body)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(
        answer.text.contains(&format!(
            "expands to more than {} bytes",
            kaas_pipeline::yaml::MAX_EXPANDED_DOCUMENT_BYTES
        )),
        "{}",
        answer.text
    );
    let listed = h.get("/api/v1/pipelines?tenant=shop", ADMIN).await;
    assert!(!listed.text.contains("bomb"), "{}", listed.text);
}
