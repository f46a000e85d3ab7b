//! Store tests of pipeline templates and their instances ([`crate::store::templates`],
//! [`crate::store::template_instances`]): generations kept for pinned instances and
//! rollback, following instances re-rendered with the template (all or none), the
//! provider's templates seen by every tenant, tenants kept apart, and rendered
//! pipelines owned by their instance; on SQLite and PostgreSQL like the rest.

use kaas_pipeline::templates::{
    PipelineInstance, PipelineTemplate, TEMPLATE_GENERATION_ANNOTATION, ValidatedInstance,
    ValidatedTemplate, validate_instance, validate_template,
};
use kaas_pipeline::{ValidatedTracePipeline, ValidationContext};

use super::{TestDb, admin};
use crate::secrets::SecretBox;
use crate::store::entities::{pipeline_instances, pipeline_templates};
use crate::store::{PROVIDER_SCOPE, Store, StoreError};
use sea_orm::EntityTrait;

store_tests!(
    generations_are_kept_followers_move_and_pinned_instances_stay,
    a_template_change_that_breaks_any_instance_changes_nothing,
    provider_templates_are_every_tenants_and_tenants_stay_apart,
    rendered_pipelines_belong_to_their_instance,
    template_header_values_are_sealed_at_rest,
    rekeying_seals_templates_and_instance_bindings_again,
    a_binding_to_a_config_map_key_is_stored_and_sent_as_the_instance,
);

fn context() -> ValidationContext {
    ValidationContext::tenant_default()
}

/// A trace template with an endpoint, a secret token and a timeout defaulting to
/// `timeout`; `extra` adds placeholder declarations.
fn template(name: &str, timeout: &str, extra: &str) -> ValidatedTemplate {
    let extra_use = if extra.is_empty() {
        ""
    } else {
        "\n          headers: [{name: X-Region, value: \"%{region}\"}]"
    };
    let text = format!(
        r#"
metadata: {{name: {name}}}
spec:
  pipelineKind: TracePipeline
  placeholders:
    - {{name: endpoint, type: url, description: The endpoint., required: true}}
    - {{name: token, type: secret, description: The token., required: true}}
    - {{name: timeout, type: duration, description: The timeout., default: {timeout}}}{extra}
  template:
    spec:
      output:
        otlp:
          endpoint: "%{{endpoint}}"
          timeout: "%{{timeout}}"
          authentication: {{bearerToken: {{value: "%{{token}}"}}}}{extra_use}
"#
    );
    let resource: PipelineTemplate = serde_yaml::from_str(&text).unwrap();
    validate_template(&resource, &context()).expect("a valid template")
}

/// An instance of `template` (pinned to `generation` if given).
fn instance(name: &str, template: &str, generation: Option<i64>) -> ValidatedInstance {
    let pin = generation
        .map(|g| format!(", generation: {g}"))
        .unwrap_or_default();
    let text = format!(
        r#"
metadata: {{name: {name}}}
spec:
  template: {{name: {template}{pin}}}
  bindings:
    endpoint: {{value: "https://tempo.{name}.example:4317"}}
    token: {{secretKeyRef: {{name: tempo, namespace: kaas-observer, key: token}}}}
"#
    );
    let resource: PipelineInstance = serde_yaml::from_str(&text).unwrap();
    validate_instance(&resource, &context()).expect("a valid instance")
}

async fn shop(db: &TestDb) -> Store {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
}

/// The template generation the stored pipeline of `name` was rendered from, and its
/// export timeout.
async fn rendered(store: &Store, tenant: &str, name: &str) -> (String, String) {
    let stored = store
        .get_pipeline_of::<ValidatedTracePipeline>(tenant, name)
        .await
        .unwrap()
        .expect("the instance's pipeline");
    let resource = stored.pipeline.resource();
    let annotations = resource.metadata.annotations.clone().unwrap_or_default();
    let otlp = resource.spec.output.otlp.as_ref().unwrap();
    (
        annotations[TEMPLATE_GENERATION_ANNOTATION].clone(),
        otlp.timeout.clone().unwrap_or_default(),
    )
}

async fn generations_are_kept_followers_move_and_pinned_instances_stay(db: &TestDb) {
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    let first = store
        .apply_template("shop", template("tempo", "10s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    assert!(first.created && first.changed);
    assert_eq!(first.stored.generation, 1);
    let again = store
        .apply_template("shop", template("tempo", "10s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    assert!(!again.changed, "an identical apply writes nothing");
    let follower = store
        .apply_instance(
            "shop",
            instance("follows", "tempo", None),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    assert!(follower.created);
    assert_eq!(follower.stored.template_generation, 1);
    store
        .apply_instance(
            "shop",
            instance("pinned", "tempo", Some(1)),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    let mut feed = store.subscribe();

    let second = store
        .apply_template("shop", template("tempo", "20s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    assert_eq!(second.stored.generation, 2);
    assert_eq!(
        second.rerendered,
        [("shop".to_owned(), "follows".to_owned())]
    );
    assert_eq!(
        rendered(&store, "shop", "follows").await,
        ("2".into(), "20s".into())
    );
    assert_eq!(
        rendered(&store, "shop", "pinned").await,
        ("1".into(), "10s".into())
    );
    let change = super::next_change(&mut feed).await;
    assert_eq!(
        change,
        crate::store::Change::Pipeline {
            tenant: "shop".into(),
            name: "follows".into()
        },
        "the re-rendered pipeline is pushed like any pipeline change"
    );
    let follows = store
        .get_instance("shop", "follows")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((follows.generation, follows.template_generation), (1, 2));

    let rolled = store
        .rollback_template("shop", "tempo", 1, &ctx, &actor, false)
        .await
        .unwrap();
    assert_eq!(
        rolled.stored.generation, 3,
        "a rollback is a new generation"
    );
    assert_eq!(
        rendered(&store, "shop", "follows").await,
        ("3".into(), "10s".into())
    );
    let history = store.template_generations("shop", "tempo").await.unwrap();
    assert_eq!(
        history.iter().map(|t| t.generation).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let dry = store
        .apply_template("shop", template("tempo", "30s", ""), &ctx, &actor, true)
        .await
        .unwrap();
    assert_eq!(dry.stored.generation, 4);
    assert_eq!(
        store
            .get_template("shop", "tempo", None)
            .await
            .unwrap()
            .unwrap()
            .generation,
        3,
        "a dry run writes nothing"
    );
    assert!(matches!(
        store
            .rollback_template("shop", "tempo", 9, &ctx, &actor, false)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn a_template_change_that_breaks_any_instance_changes_nothing(db: &TestDb) {
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    store
        .apply_template("shop", template("tempo", "10s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    for name in ["a-traces", "b-traces"] {
        store
            .apply_instance("shop", instance(name, "tempo", None), &ctx, &actor, false)
            .await
            .unwrap();
    }
    let required = "\n    - {name: region, type: string, description: The region., required: true}";
    let Err(StoreError::Invalid { errors, .. }) = store
        .apply_template(
            "shop",
            template("tempo", "20s", required),
            &ctx,
            &actor,
            false,
        )
        .await
    else {
        panic!("a change every follower lacks a binding for is refused");
    };
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            r#"instances["a-traces"].spec.bindings["region"]"#,
            r#"instances["b-traces"].spec.bindings["region"]"#
        ],
        "{errors}"
    );
    let latest = store
        .get_template("shop", "tempo", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.generation, 1, "no generation was written");
    assert_eq!(
        rendered(&store, "shop", "a-traces").await,
        ("1".into(), "10s".into())
    );
    // Pinned to generation 1, the instances no longer follow: the change goes through.
    for name in ["a-traces", "b-traces"] {
        store
            .apply_instance(
                "shop",
                instance(name, "tempo", Some(1)),
                &ctx,
                &actor,
                false,
            )
            .await
            .unwrap();
    }
    let changed = store
        .apply_template(
            "shop",
            template("tempo", "20s", required),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    assert!(changed.rerendered.is_empty());
    // An instance missing a required binding is refused, naming it.
    let Err(StoreError::Invalid { errors, .. }) = store
        .apply_instance(
            "shop",
            instance("c-traces", "tempo", None),
            &ctx,
            &actor,
            false,
        )
        .await
    else {
        panic!("an unbound required placeholder is refused");
    };
    assert_eq!(errors.0[0].path, r#"spec.bindings["region"]"#, "{errors}");
    assert!(
        store
            .get_instance("shop", "c-traces")
            .await
            .unwrap()
            .is_none()
    );
}

async fn provider_templates_are_every_tenants_and_tenants_stay_apart(db: &TestDb) {
    let store = shop(db).await;
    store.create_tenant("bank", &admin()).await.unwrap();
    let (ctx, actor) = (context(), admin());
    let synced = store
        .sync_provider_templates(vec![template("shared", "10s", "")], &ctx)
        .await;
    assert!(synced[0].1.as_ref().is_ok_and(|w| w.created));
    for tenant in ["shop", "bank"] {
        let seen = store
            .get_template(tenant, "shared", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (seen.tenant.as_str(), seen.is_provider()),
            (PROVIDER_SCOPE, true)
        );
        store
            .apply_instance(
                tenant,
                instance("traces", "shared", None),
                &ctx,
                &actor,
                false,
            )
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .apply_template("shop", template("shared", "20s", ""), &ctx, &actor, false)
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A changed provider template moves every tenant's followers.
    let synced = store
        .sync_provider_templates(vec![template("shared", "20s", "")], &ctx)
        .await;
    let written = synced[0].1.as_ref().unwrap();
    assert_eq!(
        written.rerendered,
        [
            ("bank".to_owned(), "traces".to_owned()),
            ("shop".to_owned(), "traces".to_owned())
        ]
    );
    assert_eq!(
        rendered(&store, "bank", "traces").await,
        ("2".into(), "20s".into())
    );

    store
        .apply_template("shop", template("own", "10s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    assert!(
        store
            .get_template("bank", "own", None)
            .await
            .unwrap()
            .is_none()
    );
    let Err(StoreError::Invalid { errors, .. }) = store
        .apply_instance("bank", instance("stolen", "own", None), &ctx, &actor, false)
        .await
    else {
        panic!("a tenant cannot bind another tenant's template");
    };
    assert_eq!(errors.0[0].path, "spec.template.name");
    let listed: Vec<(String, String)> = store
        .list_templates(Some("bank"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.tenant.clone(), t.name().to_owned()))
        .collect();
    assert_eq!(listed, [(PROVIDER_SCOPE.to_owned(), "shared".to_owned())]);
    assert!(matches!(
        store.delete_template("bank", "own", &actor).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn rendered_pipelines_belong_to_their_instance(db: &TestDb) {
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    store
        .apply_template("shop", template("tempo", "10s", ""), &ctx, &actor, false)
        .await
        .unwrap();
    let written = store
        .apply_instance(
            "shop",
            instance("traces", "tempo", None),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    let kaas_pipeline::document::ValidatedResource::Trace(pipeline) = written.pipeline else {
        panic!("a trace pipeline");
    };
    assert!(matches!(
        store.apply_pipeline("shop", *pipeline, &actor).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .delete_pipeline_of::<ValidatedTracePipeline>("shop", "traces", &actor)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_template("shop", "tempo", &actor).await,
        Err(StoreError::Conflict(message)) if message.contains("traces")
    ));
    store
        .delete_instance("shop", "traces", &actor)
        .await
        .unwrap();
    assert!(
        store
            .get_pipeline_of::<ValidatedTracePipeline>("shop", "traces")
            .await
            .unwrap()
            .is_none(),
        "the instance's pipeline goes with it"
    );
    store
        .delete_template("shop", "tempo", &actor)
        .await
        .unwrap();
    assert!(
        store
            .get_template("shop", "tempo", None)
            .await
            .unwrap()
            .is_none()
    );
    store.delete_tenant("shop", &actor).await.unwrap();
}

/// A trace template whose header `X-Tenant` is written literally (`literal`), and
/// whose `X-Region` header takes the string placeholder `region`.
fn template_with_headers(literal: &str) -> ValidatedTemplate {
    let text = format!(
        r#"
metadata: {{name: headers}}
spec:
  pipelineKind: TracePipeline
  placeholders:
    - {{name: endpoint, type: url, description: The endpoint., required: true}}
    - {{name: region, type: string, description: The region header., required: true}}
  template:
    spec:
      output:
        otlp:
          endpoint: "%{{endpoint}}"
          headers:
            - {{name: X-Tenant, value: "{literal}"}}
            - {{name: X-Region, value: "%{{region}}"}}
"#
    );
    let resource: PipelineTemplate = serde_yaml::from_str(&text).unwrap();
    validate_template(&resource, &context()).expect("a valid template")
}

/// An instance of `headers` binding the region header to `region` (a static value,
/// sealed with the pipeline's header) or to a ConfigMap key when `region` is `None`.
fn instance_with_region(name: &str, region: Option<&str>) -> ValidatedInstance {
    let region = match region {
        Some(value) => format!("{{value: \"{value}\"}}"),
        None => {
            "{configMapKeyRef: {name: regions, namespace: kaas-observer, key: region}}".to_owned()
        }
    };
    let text = format!(
        r#"
metadata: {{name: {name}}}
spec:
  template: {{name: headers}}
  bindings:
    endpoint: {{value: "https://tempo.shop.example:4317"}}
    region: {region}
"#
    );
    let resource: PipelineInstance = serde_yaml::from_str(&text).unwrap();
    validate_instance(&resource, &context()).expect("a valid instance")
}

/// The header values of the instance's stored pipeline, by header name.
async fn headers_of(store: &Store, name: &str) -> Vec<(String, String)> {
    let stored = store
        .get_pipeline_of::<ValidatedTracePipeline>("shop", name)
        .await
        .unwrap()
        .expect("the instance's pipeline");
    let otlp = stored.pipeline.resource().spec.output.otlp.clone().unwrap();
    otlp.headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                h.value
                    .as_ref()
                    .map(|v| v.expose().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Applies [`template_with_headers`] for tenant `shop`.
async fn apply_headers_template(store: &Store, literal: &str) -> crate::store::TemplateWritten {
    store
        .apply_template(
            "shop",
            template_with_headers(literal),
            &context(),
            &admin(),
            false,
        )
        .await
        .unwrap()
}

/// Issue 18: a header value written literally in a template is sealed at rest like a
/// pipeline's header value: no row and no database file holds it in clear, and it reads
/// back as written.
async fn template_header_values_are_sealed_at_rest(db: &TestDb) {
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    apply_headers_template(&store, "SECRET-literal-tenant").await;
    let rows = pipeline_templates::Entity::find()
        .all(store.db())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        !rows[0]
            .document
            .to_string()
            .contains("SECRET-literal-tenant"),
        "{:?}",
        rows[0].document
    );
    assert!(
        rows[0]
            .document
            .to_string()
            .contains(crate::secrets::SEALED_PREFIX)
    );
    assert!(
        !db.raw_contents(&store)
            .await
            .contains("SECRET-literal-tenant"),
        "plaintext at rest"
    );
    let read = store
        .get_template("shop", "headers", None)
        .await
        .unwrap()
        .unwrap();
    let spec = &read.template.resource().spec.template.spec;
    assert_eq!(
        spec["output"]["otlp"]["headers"][0]["value"],
        "SECRET-literal-tenant"
    );
    // The same template again is no change, though every sealing differs.
    let again = apply_headers_template(&store, "SECRET-literal-tenant").await;
    assert!(!again.changed);
    // Its instance's pipeline carries the value, sealed like any pipeline's.
    store
        .apply_instance(
            "shop",
            instance_with_region("traces", Some("eu-1")),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        headers_of(&store, "traces").await,
        [
            ("X-Tenant".to_owned(), "SECRET-literal-tenant".to_owned()),
            ("X-Region".to_owned(), "eu-1".to_owned())
        ]
    );
    assert!(
        !db.raw_contents(&store)
            .await
            .contains("SECRET-literal-tenant"),
        "plaintext at rest"
    );
}

/// Issue 18: `observer secrets rekey` seals a template's header values and an
/// instance's sealed binding values again with the current key: afterwards a store
/// holding only the new key reads both.
async fn rekeying_seals_templates_and_instance_bindings_again(db: &TestDb) {
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    apply_headers_template(&store, "SECRET-literal-tenant").await;
    let written = store
        .apply_instance(
            "shop",
            instance_with_region("traces", Some("SECRET-region")),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    assert!(
        written.stored.sealed.contains("region"),
        "the static header value is sealed"
    );
    let row = pipeline_instances::Entity::find()
        .all(store.db())
        .await
        .unwrap();
    assert!(!row[0].document.to_string().contains("SECRET-region"));
    assert!(!row[0].sealed_values.to_string().contains("SECRET-region"));

    let new_key = SecretBox::generate().unwrap();
    let rotated = Store::connect(
        &db.url,
        new_key.clone().with_previous_keys([db.secrets.clone()]),
    )
    .await
    .unwrap();
    let report = rotated.rekey_secrets(&actor).await.unwrap();
    assert!(report.unreadable.is_empty(), "{report:?}");
    // The pipeline, the template generation and the instance.
    assert_eq!(report.pipelines_rekeyed, 3, "{report:?}");
    assert_eq!(report.values_rekeyed, 2 + 2 + 1, "{report:?}");
    let again = rotated.rekey_secrets(&actor).await.unwrap();
    assert_eq!(
        (again.pipelines_rekeyed, again.pipelines_current),
        (0, 3),
        "{again:?}"
    );

    let only_new = Store::connect(&db.url, new_key).await.unwrap();
    let template = only_new
        .get_template("shop", "headers", None)
        .await
        .unwrap()
        .unwrap();
    let spec = &template.template.resource().spec.template.spec;
    assert_eq!(
        spec["output"]["otlp"]["headers"][0]["value"],
        "SECRET-literal-tenant"
    );
    let instance = only_new
        .get_instance("shop", "traces")
        .await
        .unwrap()
        .unwrap();
    let binding = &instance.instance.resource().spec.bindings["region"];
    assert_eq!(binding.value.as_deref(), Some("SECRET-region"));
    assert_eq!(headers_of(&only_new, "traces").await[1].1, "SECRET-region");
}

/// Issue 18: a placeholder bound to a ConfigMap key is stored with its type's sample,
/// marked pending, and is what the tenant's agents are sent as the instance itself.
async fn a_binding_to_a_config_map_key_is_stored_and_sent_as_the_instance(db: &TestDb) {
    use kaas_pipeline::templates::PENDING_BINDINGS_ANNOTATION;
    let store = shop(db).await;
    let (ctx, actor) = (context(), admin());
    store
        .apply_template("shop", template_with_headers("t"), &ctx, &actor, false)
        .await
        .unwrap();
    store
        .apply_instance(
            "shop",
            instance_with_region("traces", None),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    let stored = store
        .get_pipeline_of::<ValidatedTracePipeline>("shop", "traces")
        .await
        .unwrap()
        .unwrap();
    let annotations = stored
        .pipeline
        .resource()
        .metadata
        .annotations
        .clone()
        .unwrap();
    assert_eq!(annotations[PENDING_BINDINGS_ANNOTATION], "region");
    let pending = store.pending_instances("shop").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].name(), pending[0].template_generation()),
        ("traces", 1)
    );
    assert_eq!(pending[0].pending()[0].placeholder, "region");
    // An instance with static values only is sent as its pipeline.
    store
        .apply_instance(
            "shop",
            instance_with_region("plain", Some("eu")),
            &ctx,
            &actor,
            false,
        )
        .await
        .unwrap();
    assert_eq!(store.pending_instances("shop").await.unwrap().len(), 1);
}
