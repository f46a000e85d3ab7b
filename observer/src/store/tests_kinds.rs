//! Store tests of pipeline kinds (issues 16 and 17): `LogPipeline`s and
//! `TracePipeline`s stored beside `MetricPipeline`s, names unique per tenant and kind,
//! secrets sealed for their kind, quotas per kind; on SQLite and PostgreSQL like the
//! rest of the suite.

use std::collections::BTreeMap;

use kaas_pipeline::{
    LogPipeline, TracePipeline, ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline,
};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};

use super::{HOUR, TestDb, admin, new_cluster, parse_pipeline, validated};
use crate::store::entities::pipelines;
use crate::store::pipeline_rows::PipelineRow;
use crate::store::{MASKED_SECRET, StoreError};

store_tests!(
    names_are_unique_per_tenant_and_kind,
    log_pipeline_secrets_are_sealed_masked_and_bound_to_their_kind,
    quotas_count_each_kind_apart,
    log_pipelines_for_a_cluster_honour_tenant_and_selector,
    trace_pipelines_are_a_kind_of_their_own,
);

/// A pipeline of `kind` shipping to an OTLP endpoint with an inline header value (the
/// same secret field path for both kinds), selecting the clusters labelled
/// `env: <env>` if `env` is given.
fn document(kind: &str, name: &str, header: &str, env: Option<&str>) -> String {
    let selector = env
        .map(|env| format!("  clusterSelector:\n    matchLabels:\n      env: {env}\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: {kind}
metadata:
  name: {name}
spec:
  input:
    runtime:
      enabled: true
  output:
    otlp:
      endpoint: https://collector.example:4317
      headers:
        - name: Authorization
          value: "{header}"
{selector}"#
    )
}

fn log_pipeline(name: &str, header: &str, env: Option<&str>) -> ValidatedLogPipeline {
    let resource: LogPipeline =
        serde_yaml::from_str(&document("LogPipeline", name, header, env)).unwrap();
    kaas_pipeline::validate_log_pipeline(
        &resource,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .unwrap()
}

fn metric_pipeline(name: &str, header: &str) -> ValidatedPipeline {
    validated(&parse_pipeline(&document(
        "MetricPipeline",
        name,
        header,
        None,
    )))
}

fn header_of(resource: &LogPipeline) -> String {
    let otlp = resource.spec.output.otlp.as_ref().unwrap();
    otlp.headers[0].value.as_ref().unwrap().expose().to_owned()
}

/// A metric and a log pipeline may share a name; each is created, read, updated and
/// deleted as its own.
async fn names_are_unique_per_tenant_and_kind(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (_, created) = store
        .apply_pipeline("shop", metric_pipeline("shop", "m"), &admin())
        .await
        .unwrap();
    assert!(created);
    let (log, created) = store
        .apply_pipeline("shop", log_pipeline("shop", "l", None), &admin())
        .await
        .unwrap();
    assert!(
        created,
        "a log pipeline named as a metric one is a new pipeline"
    );
    assert_eq!(log.generation, 1);
    // The same log pipeline again: unchanged, not a conflict with the metric one.
    let (again, created) = store
        .apply_pipeline("shop", log_pipeline("shop", "l", None), &admin())
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.generation, 1);
    let (changed, _) = store
        .apply_pipeline("shop", log_pipeline("shop", "l2", None), &admin())
        .await
        .unwrap();
    assert_eq!(changed.generation, 2);
    let metric = store.get_pipeline("shop", "shop").await.unwrap().unwrap();
    assert_eq!(metric.generation, 1, "the metric pipeline did not change");

    assert_eq!(store.list_pipelines(Some("shop")).await.unwrap().len(), 1);
    let logs = store
        .list_pipelines_of::<ValidatedLogPipeline>(Some("shop"))
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(header_of(logs[0].pipeline.resource()), "l2");
    assert_eq!(store.count_pipelines(Some("shop")).await.unwrap(), 2);
    let summaries = store.pipeline_summaries_of("shop").await.unwrap();
    let kinds: Vec<(&str, &str)> = summaries
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(kinds, [("LogPipeline", "shop"), ("MetricPipeline", "shop")]);

    // Deleting one kind leaves the other.
    store
        .delete_pipeline_of::<ValidatedLogPipeline>("shop", "shop", &admin())
        .await
        .unwrap();
    assert!(
        store
            .get_pipeline_of::<ValidatedLogPipeline>("shop", "shop")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_pipeline("shop", "shop").await.unwrap().is_some());
    assert!(matches!(
        store
            .delete_pipeline_of::<ValidatedLogPipeline>("shop", "shop", &admin())
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // Another tenant's pipeline of the same name and kind is its own.
    store.create_tenant("bank", &admin()).await.unwrap();
    store
        .apply_pipeline("bank", log_pipeline("shop", "b", None), &admin())
        .await
        .unwrap();
    assert!(
        store
            .get_pipeline_of::<ValidatedLogPipeline>("shop", "shop")
            .await
            .unwrap()
            .is_none()
    );
}

/// A log pipeline's inline secrets are sealed at rest, masked in what the API shows,
/// kept by `***`, and bound to their kind: a sealed value copied from the metric
/// pipeline of the same name and field does not open in the log pipeline's row.
async fn log_pipeline_secrets_are_sealed_masked_and_bound_to_their_kind(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .apply_pipeline("shop", metric_pipeline("p", "metric-secret-1"), &admin())
        .await
        .unwrap();
    let (stored, _) = store
        .apply_pipeline("shop", log_pipeline("p", "log-secret-2", None), &admin())
        .await
        .unwrap();
    let contents = db.raw_contents(&store).await;
    assert!(!contents.contains("log-secret-2"), "plaintext at rest");
    assert!(!contents.contains("metric-secret-1"), "plaintext at rest");
    let masked = stored.masked_resource();
    assert_eq!(header_of(&masked), MASKED_SECRET);
    assert_eq!(masked.metadata.generation, Some(1));

    // `***` keeps the stored value.
    let mut resource = masked.clone();
    resource.status = None;
    let keep = kaas_pipeline::validate_log_pipeline(
        &resource,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .unwrap();
    let (kept, created) = store.apply_pipeline("shop", keep, &admin()).await.unwrap();
    assert!(!created);
    assert_eq!(header_of(kept.pipeline.resource()), "log-secret-2");
    assert_eq!(kept.generation, 1, "*** is no change");

    // Re-keying covers every kind.
    let report = store.rekey_secrets(&admin()).await.unwrap();
    assert!(report.unreadable.is_empty(), "{report:?}");
    assert_eq!(
        report.pipelines_rekeyed + report.pipelines_current,
        2,
        "{report:?}"
    );
    let reread = store
        .get_pipeline_of::<ValidatedLogPipeline>("shop", "p")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header_of(reread.pipeline.resource()), "log-secret-2");

    // Copy the metric row's sealed header into the log row: it is sealed for another
    // kind, so the log pipeline becomes unreadable instead of carrying the metric
    // pipeline's secret.
    let key = |kind: &str| ("shop".to_owned(), kind.to_owned(), "p".to_owned());
    let metric_row = pipelines::Entity::find_by_id(key("MetricPipeline"))
        .one(store.db())
        .await
        .unwrap()
        .unwrap();
    let sealed = metric_row.spec["spec"]["output"]["otlp"]["headers"][0]["value"].clone();
    let log_row = pipelines::Entity::find_by_id(key("LogPipeline"))
        .one(store.db())
        .await
        .unwrap()
        .unwrap();
    let mut spec = log_row.spec.clone();
    spec["spec"]["output"]["otlp"]["headers"][0]["value"] = sealed;
    let mut active = log_row.into_active_model();
    active.spec = Set(spec);
    active.update(store.db()).await.unwrap();
    let row = store
        .get_pipeline_row_of::<ValidatedLogPipeline>("shop", "p")
        .await
        .unwrap()
        .unwrap();
    let PipelineRow::Unreadable(unreadable) = row else {
        panic!("a value sealed for the metric pipeline opened in the log pipeline");
    };
    assert!(!unreadable.reason.contains("metric-secret-1"));
    let shown = unreadable.masked.expect("the document parses");
    assert_eq!(header_of(&shown), MASKED_SECRET);
    // The metric pipeline is untouched.
    assert!(store.get_pipeline("shop", "p").await.unwrap().is_some());
}

/// `pipelines/LogPipeline` bounds log pipelines and nothing else.
async fn quotas_count_each_kind_apart(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let limits = BTreeMap::from([
        ("pipelines/LogPipeline".to_owned(), 1),
        ("pipelines/MetricPipeline".to_owned(), 1),
    ]);
    store
        .set_tenant_quotas("shop", &limits, &admin())
        .await
        .unwrap();
    store
        .apply_pipeline("shop", log_pipeline("l1", "x", None), &admin())
        .await
        .unwrap();
    // The metric quota is not taken by the log pipeline.
    store
        .apply_pipeline("shop", metric_pipeline("m1", "x"), &admin())
        .await
        .unwrap();
    let refused = store
        .apply_pipeline("shop", log_pipeline("l2", "x", None), &admin())
        .await;
    match refused {
        Err(StoreError::QuotaExceeded { quota, .. }) => {
            assert_eq!(quota, "pipelines/LogPipeline");
        }
        other => panic!("not refused by the log quota: {other:?}"),
    }
    let quotas = store.tenant_quotas("shop").await.unwrap();
    let used: Vec<(&str, u64)> = quotas
        .iter()
        .map(|q| (q.name.as_str(), q.used))
        .filter(|(name, _)| name.starts_with("pipelines/"))
        .collect();
    assert_eq!(
        used,
        [
            ("pipelines/MetricPipeline", 1),
            ("pipelines/LogPipeline", 1),
            ("pipelines/TracePipeline", 0),
        ]
    );
}

/// A cluster runs the log pipelines of its tenant whose selector matches it.
async fn log_pipelines_for_a_cluster_honour_tenant_and_selector(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    let (prod, _) = store
        .create_cluster(
            new_cluster("prod", "shop", &[("env", "prod")]),
            HOUR,
            &admin(),
        )
        .await
        .unwrap();
    for (tenant, name, env) in [
        ("shop", "all", None),
        ("shop", "prod-only", Some("prod")),
        ("shop", "dev-only", Some("dev")),
        ("bank", "theirs", None),
    ] {
        store
            .apply_pipeline(tenant, log_pipeline(name, "x", env), &admin())
            .await
            .unwrap();
    }
    let selected = store
        .pipelines_for_cluster::<ValidatedLogPipeline>(&prod)
        .await
        .unwrap();
    let names: Vec<&str> = selected.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["all", "prod-only"]);
    assert!(
        store
            .pipelines_for_cluster::<ValidatedPipeline>(&prod)
            .await
            .unwrap()
            .is_empty()
    );
}

fn trace_pipeline(name: &str, header: &str, env: Option<&str>) -> ValidatedTracePipeline {
    let selector = env
        .map(|env| format!("  clusterSelector:\n    matchLabels:\n      env: {env}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: TracePipeline\n\
         metadata: {{name: {name}}}\nspec:\n  sampling: {{ratio: 0.5}}\n  output:\n    otlp:\n      \
         endpoint: https://tempo.example:4317\n      headers: [{{name: X-Key, value: \"{header}\"}}]\n\
         {selector}"
    );
    let resource: TracePipeline = serde_yaml::from_str(&text).unwrap();
    kaas_pipeline::validate_trace_pipeline(
        &resource,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .unwrap()
}

/// A trace pipeline shares its name with a metric and a log pipeline and is stored,
/// sealed, counted against `pipelines/TracePipeline`, selected for clusters and
/// deleted as its own.
async fn trace_pipelines_are_a_kind_of_their_own(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let limits = BTreeMap::from([("pipelines/TracePipeline".to_owned(), 2)]);
    store
        .set_tenant_quotas("shop", &limits, &admin())
        .await
        .unwrap();
    let (prod, _) = store
        .create_cluster(
            new_cluster("prod", "shop", &[("env", "prod")]),
            HOUR,
            &admin(),
        )
        .await
        .unwrap();
    store
        .apply_pipeline("shop", metric_pipeline("p", "m"), &admin())
        .await
        .unwrap();
    store
        .apply_pipeline("shop", log_pipeline("p", "l", None), &admin())
        .await
        .unwrap();
    for (name, env) in [("p", None), ("dev-only", Some("dev"))] {
        store
            .apply_pipeline(
                "shop",
                trace_pipeline(name, "trace-secret-1", env),
                &admin(),
            )
            .await
            .unwrap();
    }
    let refused = store
        .apply_pipeline("shop", trace_pipeline("third", "x", None), &admin())
        .await;
    match refused {
        Err(StoreError::QuotaExceeded { quota, .. }) => {
            assert_eq!(quota, "pipelines/TracePipeline");
        }
        other => panic!("not refused by the trace quota: {other:?}"),
    }

    let row = pipelines::Entity::find_by_id((
        "shop".to_owned(),
        "TracePipeline".to_owned(),
        "p".to_owned(),
    ))
    .one(store.db())
    .await
    .unwrap()
    .expect("the trace row");
    let stored = row.spec["spec"]["output"]["otlp"]["headers"][0]["value"].to_string();
    assert!(
        !stored.contains("trace-secret-1"),
        "stored in clear: {stored}"
    );
    assert_eq!(row.spec["spec"]["sampling"]["ratio"], 0.5);
    let read = store
        .get_pipeline_of::<ValidatedTracePipeline>("shop", "p")
        .await
        .unwrap()
        .expect("readable");
    let otlp = read.pipeline.spec().output.otlp.as_ref().unwrap();
    assert_eq!(
        otlp.headers[0].value.as_ref().unwrap().expose(),
        "trace-secret-1"
    );
    assert_eq!(read.pipeline.sampling.ratio, 0.5);

    let selected = store
        .pipelines_for_cluster::<ValidatedTracePipeline>(&prod)
        .await
        .unwrap();
    let names: Vec<&str> = selected.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["p"]);

    store
        .delete_pipeline_of::<ValidatedTracePipeline>("shop", "p", &admin())
        .await
        .unwrap();
    assert!(
        store
            .get_pipeline_of::<ValidatedTracePipeline>("shop", "p")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_pipeline("shop", "p").await.unwrap().is_some());
    let logs = store
        .get_pipeline_of::<ValidatedLogPipeline>("shop", "p")
        .await;
    assert!(logs.unwrap().is_some(), "the log pipeline stays");
}
