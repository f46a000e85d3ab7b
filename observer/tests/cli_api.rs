//! The `observer` binary against the REST API served in-process on 127.0.0.1:0: cluster,
//! pipeline, tenant, token and status commands, output formats, and the errors a user
//! sees when the observer is unreachable, the token is refused or a file is invalid.

mod api_harness;

mod cli {
    use std::net::SocketAddr;

    use kaas_test_support::process::{CommandOutput, run};
    use serde::Deserialize;

    use super::api_harness::{ADMIN, CONTROL_ENDPOINT, Harness, repo_file};

    const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

    const TWO_PIPELINES: &str = "\
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: metrics}
spec:
  input: {prometheus: {enabled: true}}
  output:
    prometheusRemoteWrite:
      url: https://receiver.example/write
      authentication: {basic: {user: {value: alice}, password: {value: SECRET-password}}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: traces-free}
spec:
  input: {prometheus: {enabled: true}}
  output: {otlp: {endpoint: \"https://otlp.example:4317\"}}
";

    /// Runs the binary with `--server` and `--token` (when given) in front of `args`.
    async fn observer(address: SocketAddr, token: Option<&str>, args: &[&str]) -> CommandOutput {
        observer_at(&format!("http://{address}"), token, args, "").await
    }

    async fn observer_at(
        server: &str,
        token: Option<&str>,
        args: &[&str],
        stdin: &str,
    ) -> CommandOutput {
        let mut all: Vec<String> = vec!["--server".into(), server.into()];
        if let Some(token) = token {
            all.extend(["--token".into(), token.into()]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let stdin = stdin.to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run(OBSERVER, &args, &stdin)
        })
        .await
        .expect("command thread")
    }

    fn ok(out: &CommandOutput) {
        assert_eq!(
            out.code(),
            0,
            "stdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }

    async fn setup() -> (Harness, SocketAddr) {
        let h = Harness::new().await;
        let address = h.serve().await;
        let out = observer(address, Some(ADMIN), &["tenant", "create", "shop"]).await;
        ok(&out);
        assert_eq!(out.stdout, "tenant shop created\n");
        (h, address)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_add_list_get_and_delete() {
        let (h, address) = setup().await;
        let manifest_file = h.dir.path().join("agent.yaml");
        let out = observer(
            address,
            Some(ADMIN),
            &[
                "cluster",
                "add",
                "prod-1",
                "--tenant",
                "shop",
                "--label",
                "env=prod",
                "--label",
                "region=eu",
                "--api-endpoint",
                "https://k8s.example:6443",
                "--manifest-file",
                manifest_file.to_str().unwrap(),
            ],
        )
        .await;
        ok(&out);
        assert!(out.stdout.contains("join token"), "{}", out.stdout);
        let manifest = std::fs::read_to_string(&manifest_file).unwrap();
        assert!(manifest.contains(CONTROL_ENDPOINT), "{manifest}");
        let token_line = out.stdout.lines().nth(1).unwrap();
        assert!(
            manifest.contains(token_line),
            "the printed join token is in the manifest"
        );

        // Without --manifest-file the manifests are standard output, ready for kubectl.
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "add", "dev-1", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out.stdout)
            .map(|d| serde_yaml::Value::deserialize(d).expect("YAML manifests on stdout"))
            .collect();
        assert!(documents.iter().any(|d| d["kind"] == "Deployment"));
        assert!(out.stderr.contains("join token"), "{}", out.stderr);

        let out = observer(address, Some(ADMIN), &["cluster", "list"]).await;
        ok(&out);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{}", out.stdout);
        assert!(
            lines.iter().any(|l| l.starts_with("prod-1")
                && l.contains("provisioning")
                && l.contains("env=prod,region=eu")),
            "{}",
            out.stdout
        );

        let out = observer(address, Some(ADMIN), &["cluster", "list", "-o", "json"]).await;
        ok(&out);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(json["items"].as_array().unwrap().len(), 2);

        // An admin names a cluster by tenant and name, or by its global id.
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "get", "prod-1", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        assert!(out.stdout.contains("Tenant:        shop"), "{}", out.stdout);
        assert!(
            out.stdout.contains("Global id:     shop.prod-1"),
            "{}",
            out.stdout
        );
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "get", "shop.prod-1", "-o", "yaml"],
        )
        .await;
        ok(&out);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("YAML");
        assert_eq!(
            yaml["apiEndpoint"].as_str(),
            Some("https://k8s.example:6443")
        );

        let out = observer(
            address,
            Some(ADMIN),
            &[
                "cluster",
                "join-token",
                "prod-1",
                "--tenant",
                "shop",
                "-o",
                "json",
            ],
        )
        .await;
        ok(&out);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert!(json["joinToken"].as_str().is_some());

        let out = observer(address, Some(ADMIN), &["cluster", "delete", "shop.prod-1"]).await;
        ok(&out);
        assert_eq!(out.stdout, "cluster shop.prod-1 deleted\n");
        let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
        assert_eq!(cluster.state.to_string(), "deleted");

        let out = observer(address, Some(ADMIN), &["cluster", "get", "nope"]).await;
        assert_eq!(out.code(), 1);
        assert!(out.stderr.contains("not found"), "{}", out.stderr);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_apply_get_list_and_delete() {
        let (h, address) = setup().await;
        let file = h.dir.path().join("pipelines.yaml");
        std::fs::write(&file, TWO_PIPELINES).unwrap();
        let file = file.to_str().unwrap();
        let apply = ["pipeline", "apply", "-f", file, "--tenant", "shop"];

        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline metrics created\nMetricPipeline traces-free created\n"
        );
        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline metrics unchanged\nMetricPipeline traces-free unchanged\n"
        );
        std::fs::write(
            file,
            TWO_PIPELINES.replace("receiver.example", "other.example"),
        )
        .unwrap();
        let mut dry = apply.to_vec();
        dry.push("--dry-run");
        let out = observer(address, Some(ADMIN), &dry).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline metrics configured (dry run)\nMetricPipeline traces-free unchanged (dry run)\n"
        );
        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline metrics configured\nMetricPipeline traces-free unchanged\n"
        );

        let out = observer(address, Some(ADMIN), &["pipeline", "list"]).await;
        ok(&out);
        assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
        assert!(
            out.stdout.contains("metrics")
                && out
                    .stdout
                    .contains("remote-write https://other.example/write"),
            "{}",
            out.stdout
        );
        let out = observer(address, Some(ADMIN), &["pipeline", "list", "-o", "json"]).await;
        ok(&out);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert!(!out.stdout.contains("SECRET-password"), "{}", out.stdout);

        // get -o yaml prints a document that applies back unchanged, secrets kept.
        let out = observer(
            address,
            Some(ADMIN),
            &[
                "pipeline", "get", "metrics", "--tenant", "shop", "-o", "yaml",
            ],
        )
        .await;
        ok(&out);
        assert!(!out.stdout.contains("SECRET-password"), "{}", out.stdout);
        let document: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("YAML");
        assert_eq!(document["metadata"]["generation"].as_i64(), Some(2));
        let server = format!("http://{address}");
        let out = observer_at(
            &server,
            Some(ADMIN),
            &["pipeline", "apply", "-f", "-", "--tenant", "shop"],
            &out.stdout,
        )
        .await;
        ok(&out);
        assert_eq!(out.stdout, "MetricPipeline metrics unchanged\n");
        let stored = h
            .store
            .get_pipeline("shop", "metrics")
            .await
            .unwrap()
            .unwrap();
        assert!(
            serde_json::to_string(stored.pipeline.resource())
                .unwrap()
                .contains("SECRET-password")
        );

        let out = observer(
            address,
            Some(ADMIN),
            &["pipeline", "get", "metrics", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        assert!(out.stdout.contains("Generation:  2"), "{}", out.stdout);

        let out = observer(
            address,
            Some(ADMIN),
            &["pipeline", "delete", "metrics", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        assert_eq!(out.stdout, "MetricPipeline metrics deleted\n");
        assert!(
            h.store
                .get_pipeline("shop", "metrics")
                .await
                .unwrap()
                .is_none()
        );
        let out = observer(
            address,
            Some(ADMIN),
            &["pipeline", "get", "metrics", "--tenant", "shop"],
        )
        .await;
        assert_eq!(out.code(), 1);
    }

    /// Issue 18: a pipeline with raw Prometheus scrape configs is in unsupported mode,
    /// and says so in `pipeline get` (text and YAML) and in the API's status; one
    /// without them does not. A raw config with an inline credential is refused with
    /// its path, never echoing the credential.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsupported_mode_shows_in_get_and_the_api() {
        let (h, address) = setup().await;
        let raw = repo_file("pipeline/testdata/good/unsupported-raw-scrape-configs.yaml");
        let file = h.dir.path().join("raw.yaml");
        std::fs::write(&file, format!("{TWO_PIPELINES}---\n{raw}")).unwrap();
        let file = file.to_str().unwrap();
        let out = observer(
            address,
            Some(ADMIN),
            &["pipeline", "apply", "-f", file, "--tenant", "shop"],
        )
        .await;
        ok(&out);
        assert!(
            out.stdout.contains("MetricPipeline raw-probes created"),
            "{}",
            out.stdout
        );

        let get = |name: &'static str, yaml: bool| {
            let mut args = vec!["pipeline", "get", name, "--tenant", "shop"];
            if yaml {
                args.extend(["-o", "yaml"]);
            }
            async move { observer(address, Some(ADMIN), &args).await }
        };
        let out = get("raw-probes", false).await;
        ok(&out);
        assert!(
            out.stdout
                .contains("UnsupportedMode: true (raw Prometheus scrape configs"),
            "{}",
            out.stdout
        );
        let out = get("raw-probes", true).await;
        ok(&out);
        let document: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("YAML");
        assert_eq!(
            document["status"]["unsupportedMode"],
            serde_yaml::Value::Bool(true)
        );
        assert_eq!(
            document["spec"]["input"]["unsupported"]["scrapeConfigs"][0]["job_name"],
            serde_yaml::Value::from("blackbox"),
            "the raw configs come back in Prometheus' spelling"
        );
        let out = get("metrics", false).await;
        ok(&out);
        assert!(!out.stdout.contains("UnsupportedMode"), "{}", out.stdout);
        let out = get("metrics", true).await;
        ok(&out);
        assert!(!out.stdout.contains("unsupportedMode"), "{}", out.stdout);

        let answer = h
            .get("/api/v1/pipelines/raw-probes?tenant=shop", ADMIN)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.json()["resource"]["status"]["unsupportedMode"],
            true,
            "{}",
            answer.text
        );

        let leaky = raw.replace(
            "          static_configs:\n            - targets: [\"shop.example\", \"billing.example\"]",
            "          bearer_token: hunter2-s3cret\n          static_configs:\n            - targets: [\"shop.example\", \"billing.example\"]",
        );
        assert_ne!(leaky, raw, "the fixture still has the static targets");
        let file = h.dir.path().join("leaky.yaml");
        std::fs::write(&file, leaky).unwrap();
        let out = observer(
            address,
            Some(ADMIN),
            &[
                "pipeline",
                "apply",
                "-f",
                file.to_str().unwrap(),
                "--tenant",
                "shop",
            ],
        )
        .await;
        assert_eq!(out.code(), 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(
                "spec.input.unsupported.scrapeConfigs[0].bearer_token: an inline credential"
            ),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }

    /// Issue 16: one file holding a metric and a log pipeline of the same name; each
    /// is applied to its kind, listed with its kind, read and deleted by `--kind`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_kinds_in_one_file_are_applied_listed_and_deleted() {
        let (h, address) = setup().await;
        let file = h.dir.path().join("both.yaml");
        let both = "\
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: shop}
spec:
  input: {prometheus: {enabled: true}}
  output: {otlp: {endpoint: \"https://otlp.example:4317\"}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {name: shop}
spec:
  input: {runtime: {enabled: true}}
  output:
    loki:
      url: https://loki.example
      authentication: {basic: {user: {value: alice}, password: {value: SECRET-password}}}
";
        std::fs::write(&file, both).unwrap();
        let file = file.to_str().unwrap();
        let apply = ["pipeline", "apply", "-f", file, "--tenant", "shop"];
        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline shop created\nLogPipeline shop created\n"
        );
        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline shop unchanged\nLogPipeline shop unchanged\n"
        );

        let out = observer(address, Some(ADMIN), &["pipeline", "list"]).await;
        ok(&out);
        let rows: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..3], ["NAME", "KIND", "TENANT"]);
        assert_eq!(rows[1][..3], ["shop", "MetricPipeline", "shop"]);
        assert_eq!(rows[2][..3], ["shop", "LogPipeline", "shop"]);
        assert!(
            out.stdout.contains("loki https://loki.example"),
            "{}",
            out.stdout
        );
        let args = ["pipeline", "list", "--kind", "LogPipeline", "-o", "json"];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert!(!out.stdout.contains("SECRET-password"), "{}", out.stdout);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["kind"], "LogPipeline");

        // get -o yaml of the log pipeline applies back unchanged, secrets kept.
        let args = [
            "pipeline",
            "get",
            "shop",
            "--kind",
            "LogPipeline",
            "--tenant",
            "shop",
            "-o",
            "yaml",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert!(!out.stdout.contains("SECRET-password"), "{}", out.stdout);
        let server = format!("http://{address}");
        let again = observer_at(
            &server,
            Some(ADMIN),
            &["pipeline", "apply", "-f", "-", "--tenant", "shop"],
            &out.stdout,
        )
        .await;
        ok(&again);
        assert_eq!(again.stdout, "LogPipeline shop unchanged\n");
        let args = [
            "pipeline", "get", "shop", "--kind", "log", "--tenant", "shop",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert!(
            out.stdout.contains("Kind:        LogPipeline"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("Output:      loki https://loki.example"),
            "{}",
            out.stdout
        );

        let args = [
            "pipeline",
            "delete",
            "shop",
            "--kind",
            "LogPipeline",
            "--tenant",
            "shop",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert_eq!(out.stdout, "LogPipeline shop deleted\n");
        assert!(
            h.store
                .get_pipeline("shop", "shop")
                .await
                .unwrap()
                .is_some()
        );
        let logs = h
            .store
            .list_pipelines_of::<kaas_pipeline::ValidatedLogPipeline>(None)
            .await
            .unwrap();
        assert!(logs.is_empty());

        // validate reads both kinds offline.
        let out = observer(address, None, &["pipeline", "validate", "-f", file]).await;
        ok(&out);
        assert!(out.stdout.contains("2 valid, 0 invalid"), "{}", out.stdout);
    }

    /// Issue 17: a trace pipeline is applied to its kind beside a metric pipeline of
    /// the same name, listed, read and deleted with `--kind TracePipeline` (or
    /// `trace`), its secrets never printed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trace_pipelines_are_applied_listed_read_and_deleted_by_kind() {
        let (h, address) = setup().await;
        let file = h.dir.path().join("traces.yaml");
        let text = "\
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: shop}
spec:
  input: {prometheus: {enabled: true}}
  output: {otlp: {endpoint: \"https://otlp.example:4317\"}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: TracePipeline
metadata: {name: shop}
spec:
  sampling: {ratio: 0.25}
  output:
    otlp:
      endpoint: https://tempo.example:4317
      headers: [{name: X-Api-Key, value: SECRET-key}]
";
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        let apply = ["pipeline", "apply", "-f", file, "--tenant", "shop"];
        let out = observer(address, Some(ADMIN), &apply).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "MetricPipeline shop created\nTracePipeline shop created\n"
        );
        let args = ["pipeline", "list", "--kind", "TracePipeline", "-o", "json"];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert!(!out.stdout.contains("SECRET-key"), "{}", out.stdout);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["kind"], "TracePipeline");
        let args = [
            "pipeline", "get", "shop", "--kind", "trace", "--tenant", "shop",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert!(
            out.stdout.contains("Kind:        TracePipeline"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("Output:      otlp https://tempo.example:4317"),
            "{}",
            out.stdout
        );
        let args = [
            "pipeline",
            "delete",
            "shop",
            "--kind",
            "TracePipeline",
            "--tenant",
            "shop",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        assert_eq!(out.stdout, "TracePipeline shop deleted\n");
        let traces = h
            .store
            .list_pipelines_of::<kaas_pipeline::ValidatedTracePipeline>(None)
            .await
            .unwrap();
        assert!(traces.is_empty());
        assert!(
            h.store
                .get_pipeline("shop", "shop")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_tenants_and_status() {
        let (_h, address) = setup().await;
        let out = observer(
            address,
            Some(ADMIN),
            &[
                "token", "create", "--name", "ci", "--tenant", "shop", "-o", "json",
            ],
        )
        .await;
        ok(&out);
        let created: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let token = created["token"].as_str().unwrap().to_owned();

        // The tenant token works and sees its own tenant only.
        let out = observer(address, Some(&token), &["cluster", "add", "c1"]).await;
        ok(&out);
        let out = observer(address, Some(&token), &["status"]).await;
        ok(&out);
        assert!(
            out.stdout.contains("clusters") && out.stdout.contains("provisioning"),
            "{}",
            out.stdout
        );
        let out = observer(address, Some(&token), &["status", "-o", "json"]).await;
        ok(&out);
        let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(status["clusters"]["provisioning"], 1);
        let out = observer(address, Some(&token), &["tenant", "list"]).await;
        assert_eq!(out.code(), 1);
        assert!(out.stderr.contains("admin"), "{}", out.stderr);

        let out = observer(address, Some(ADMIN), &["tenant", "list"]).await;
        ok(&out);
        assert!(
            out.stdout.lines().any(|l| l.starts_with("shop")),
            "{}",
            out.stdout
        );
        let out = observer(address, Some(ADMIN), &["token", "list", "-o", "yaml"]).await;
        ok(&out);
        assert!(!out.stdout.contains(&token));
        let out = observer(address, Some(ADMIN), &["tenant", "create", "spare"]).await;
        ok(&out);
        let out = observer(address, Some(ADMIN), &["tenant", "delete", "spare"]).await;
        ok(&out);
        assert_eq!(out.stdout, "tenant spare deleted\n");
    }

    /// The incident runbook (docs/security.md): `token revoke --tenant T --all` locks a
    /// tenant out of the API at once and leaves other tenants alone; `cluster
    /// revoke-certificates` revokes a cluster's agent certificates (what it does to
    /// streams is in identity_lifecycle.rs); both are audited, and a tenant can do
    /// neither to another tenant.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_incident_runbook_locks_a_tenant_out_and_cuts_a_cluster() {
        let (_h, address) = setup().await;
        ok(&observer(address, Some(ADMIN), &["tenant", "create", "bank"]).await);
        let mint = |tenant: &'static str, name: &'static str| async move {
            let out = observer(
                address,
                Some(ADMIN),
                &[
                    "token", "create", "--name", name, "--tenant", tenant, "-o", "json",
                ],
            )
            .await;
            ok(&out);
            let created: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
            created["token"].as_str().unwrap().to_owned()
        };
        let (shop_ci, shop_dev, bank_ci) = (
            mint("shop", "ci").await,
            mint("shop", "dev").await,
            mint("bank", "ci").await,
        );
        ok(&observer(address, Some(&shop_ci), &["cluster", "add", "prod"]).await);

        // A tenant cannot lock another out, and an admin must name the tenant.
        let out = observer(
            address,
            Some(&shop_ci),
            &["token", "revoke", "--tenant", "bank", "--all"],
        )
        .await;
        assert_eq!(out.code(), 1, "{}", out.stdout);
        let out = observer(address, Some(ADMIN), &["token", "revoke", "--all"]).await;
        assert_ne!(out.code(), 0, "--all needs --tenant: {}", out.stdout);

        // The cluster's certificates: none issued yet, and the command says so.
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "revoke-certificates", "prod", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        assert!(
            out.stdout
                .starts_with("cluster prod: 0 agent certificates revoked"),
            "{}",
            out.stdout
        );
        let out = observer(
            address,
            Some(&bank_ci),
            &["cluster", "revoke-certificates", "prod"],
        )
        .await;
        assert_eq!(out.code(), 1, "bank has no prod: {}", out.stdout);

        let out = observer(
            address,
            Some(ADMIN),
            &["token", "revoke", "--tenant", "shop", "--all"],
        )
        .await;
        ok(&out);
        assert_eq!(out.stdout, "2 tokens of tenant shop revoked\n");
        for token in [&shop_ci, &shop_dev] {
            let out = observer(address, Some(token), &["cluster", "list"]).await;
            assert_eq!(out.code(), 1, "a revoked token still works: {}", out.stdout);
        }
        ok(&observer(address, Some(&bank_ci), &["cluster", "list"]).await);

        let out = observer(
            address,
            Some(ADMIN),
            &["audit", "--tenant", "shop", "-o", "json"],
        )
        .await;
        ok(&out);
        assert_eq!(
            out.stdout.matches("\"revoke\"").count(),
            2,
            "one audit entry per revoked token: {}",
            out.stdout
        );
        assert!(out.stdout.contains("revoke-certificates"), "{}", out.stdout);
    }

    /// Issue 15, finding 4: `observer status` lists the cluster changes the
    /// mass-deletion guard holds, and `observer cluster confirm-deletions` confirms them
    /// (an administrator only).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_deletions_are_listed_and_confirmed_from_the_command_line() {
        let (h, address) = setup().await;
        ok(&observer(
            address,
            Some(ADMIN),
            &["cluster", "add", "prod", "--tenant", "shop"],
        )
        .await);
        h.store
            .hold_deletions(
                "inventory",
                &[kaas_observer::store::HeldDeletion {
                    cluster: "shop.prod".to_owned(),
                    tenant: "shop".to_owned(),
                    to_state: kaas_observer::store::ClusterState::Deleting,
                    reason: "missing from the inventory".to_owned(),
                }],
                &kaas_observer::store::Actor("onboarding:inventory".to_owned()),
                1,
            )
            .await
            .unwrap();
        let out = observer(address, Some(ADMIN), &["status"]).await;
        ok(&out);
        assert!(
            out.stdout
                .contains("1 cluster change(s) held by the mass-deletion guard"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("shop.prod"), "{}", out.stdout);
        assert!(out.stdout.contains("deleting"), "{}", out.stdout);

        let out = observer(address, Some(ADMIN), &["cluster", "confirm-deletions"]).await;
        ok(&out);
        assert!(
            out.stdout.starts_with("1 held cluster change(s) confirmed"),
            "{}",
            out.stdout
        );
        let pending = h.store.pending_deletions(None).await.unwrap();
        assert!(pending[0].confirmed_at_ms.is_some());
    }

    /// `observer tenant quota`: shows a tenant's quotas; an admin sets and resets them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenant_quotas_are_shown_set_and_reset() {
        let (_h, address) = setup().await;
        let out = observer(address, Some(ADMIN), &["tenant", "quota", "shop"]).await;
        ok(&out);
        let lines: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["QUOTA", "USED", "LIMIT", "DEFAULT", "OVERRIDDEN"]
        );
        assert_eq!(lines[1], ["clusters", "0", "1000", "1000", "no"]);
        assert_eq!(lines[3], ["pipelines/LogPipeline", "0", "50", "50", "no"]);
        assert_eq!(lines[4], ["pipelines/TracePipeline", "0", "50", "50", "no"]);
        assert_eq!(lines[5], ["probes", "0", "200", "200", "no"]);
        let args = [
            "tenant",
            "quota",
            "shop",
            "--set",
            "clusters=3",
            "--set",
            "probes=500",
            "-o",
            "json",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        let view: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(view["quotas"][0]["limit"], 3);
        assert_eq!(view["quotas"][4]["limit"], 500);
        // Resetting one keeps the other.
        let args = [
            "tenant", "quota", "shop", "--reset", "clusters", "-o", "json",
        ];
        let out = observer(address, Some(ADMIN), &args).await;
        ok(&out);
        let view: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(view["quotas"][0]["overridden"], false);
        assert_eq!(view["quotas"][4]["limit"], 500);
        let out = observer(
            address,
            Some(ADMIN),
            &["tenant", "quota", "shop", "--set", "nope=1"],
        )
        .await;
        assert_ne!(out.code(), 0);
        assert!(out.stderr.contains("limits[\"nope\"]"), "{}", out.stderr);
        let out = observer(
            address,
            Some(ADMIN),
            &["tenant", "quota", "shop", "--set", "clusters"],
        )
        .await;
        assert_ne!(out.code(), 0);
        assert!(out.stderr.contains("is not QUOTA=LIMIT"), "{}", out.stderr);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_goes_away_is_not_an_error() {
        // `observer tenant list | head -0`: the pipe is closed before the answer arrives.
        let (_h, address) = setup().await;
        let output = tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(OBSERVER)
                .args(["--server", &format!("http://{address}"), "--token", ADMIN])
                .args(["tenant", "list", "-o", "json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start the observer CLI");
            drop(child.stdout.take());
            child.wait_with_output().expect("the CLI exits")
        })
        .await
        .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_observer_is_named_in_the_error() {
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let out = observer_at("http://127.0.0.1:9", Some(ADMIN), &["cluster", "list"], "").await;
        assert_eq!(out.code(), 1, "{}", out.stdout);
        assert!(
            out.stderr
                .contains("cannot reach the observer at http://127.0.0.1:9"),
            "{}",
            out.stderr
        );
        let out = observer_at("not a url", Some(ADMIN), &["status"], "").await;
        assert_eq!(out.code(), 1);
        assert!(out.stderr.contains("--server"), "{}", out.stderr);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_or_missing_token_is_explained() {
        let (_h, address) = setup().await;
        let out = observer(address, Some("wrong"), &["cluster", "list"]).await;
        assert_eq!(out.code(), 1);
        assert!(
            out.stderr.contains("the token was refused"),
            "{}",
            out.stderr
        );
        let out = observer(address, None, &["cluster", "list"]).await;
        assert_eq!(out.code(), 1);
        assert!(out.stderr.contains("needs a token"), "{}", out.stderr);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_file_is_refused_locally_with_field_paths() {
        let (h, address) = setup().await;
        let file = h.dir.path().join("mixed.yaml");
        let bad = repo_file("pipeline/testdata/bad/many-errors-at-once.yaml");
        std::fs::write(&file, format!("{TWO_PIPELINES}---\n{bad}")).unwrap();
        let out = observer(
            address,
            Some(ADMIN),
            &[
                "pipeline",
                "apply",
                "-f",
                file.to_str().unwrap(),
                "--tenant",
                "shop",
            ],
        )
        .await;
        assert_eq!(out.code(), 1, "{}{}", out.stdout, out.stderr);
        for path in [
            "metadata.name:",
            "spec.input.scrapeInterval:",
            "spec.processors.relabelConfigs[0].modulus:",
            "spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL",
            "spec.buffer.maxAge:",
        ] {
            assert!(
                out.stderr.contains(path),
                "{path} missing from\n{}",
                out.stderr
            );
        }
        assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
        assert!(
            h.store.list_pipelines(None).await.unwrap().is_empty(),
            "nothing sent"
        );

        // Errors only the observer can see (a *** without a stored value) come back with
        // their paths too.
        let placeholder = TWO_PIPELINES.replace("SECRET-password", "\"***\"");
        let server = format!("http://{address}");
        let out = observer_at(
            &server,
            Some(ADMIN),
            &["pipeline", "apply", "-f", "-", "--tenant", "shop"],
            &placeholder,
        )
        .await;
        assert_eq!(out.code(), 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("spec.output.prometheusRemoteWrite.authentication.basic.password.value"),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.contains("MetricPipeline traces-free created"),
            "{}",
            out.stdout
        );
    }

    /// Issue 15, finding 3: the control-plane setting at registration and later, from a
    /// file checked before anything is registered; the table says why a component is
    /// not scraped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_control_plane_is_set_at_registration_and_shown_with_reasons() {
        let (_h, address) = setup().await;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("control-plane.yaml");
        std::fs::write(
            &good,
            "etcd: {addresses: [\"10.0.0.10:2381\"]}\napiserver: {notScraped: hosted control plane}\n",
        )
        .unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "etcd: {addresses: [\"127.0.0.1:2381\"]}\n").unwrap();
        let manifest = dir.path().join("agent.yaml");
        let manifest = manifest.to_str().unwrap();

        let out = observer(
            address,
            Some(ADMIN),
            &[
                "cluster",
                "add",
                "edge-0",
                "--tenant",
                "shop",
                "--manifest-file",
                manifest,
                "--control-plane",
                bad.to_str().unwrap(),
            ],
        )
        .await;
        assert_ne!(out.code(), 0);
        assert!(
            out.stderr.contains("controlPlane.etcd.addresses[0]"),
            "{}",
            out.stderr
        );
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "list", "--tenant", "shop"],
        )
        .await;
        assert!(
            !out.stdout.contains("edge-0"),
            "nothing registered: {}",
            out.stdout
        );

        let out = observer(
            address,
            Some(ADMIN),
            &[
                "cluster",
                "add",
                "edge-1",
                "--tenant",
                "shop",
                "--manifest-file",
                manifest,
                "--control-plane",
                good.to_str().unwrap(),
            ],
        )
        .await;
        ok(&out);
        let out = observer(
            address,
            Some(ADMIN),
            &["cluster", "control-plane", "edge-1", "--tenant", "shop"],
        )
        .await;
        ok(&out);
        let row = |job: &str| {
            out.stdout
                .lines()
                .find(|l| l.starts_with(job))
                .unwrap_or_else(|| panic!("{job} in {}", out.stdout))
                .to_owned()
        };
        assert!(row("etcd").contains("10.0.0.10:2381"), "{}", out.stdout);
        assert!(
            row("apiserver").contains("hosted control plane"),
            "{}",
            out.stdout
        );
        assert!(
            row("kube-scheduler").contains("127.0.0.1"),
            "{}",
            out.stdout
        );

        let out = observer(
            address,
            Some(ADMIN),
            &[
                "cluster",
                "control-plane",
                "edge-1",
                "--tenant",
                "shop",
                "--reset",
                "-o",
                "json",
            ],
        )
        .await;
        ok(&out);
        let view: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(view["default"], true);
    }

    const TEMPLATE: &str = "\
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: PipelineTemplate
metadata: {name: tempo}
spec:
  pipelineKind: TracePipeline
  placeholders:
    - {name: endpoint, type: url, description: The endpoint., required: true}
    - {name: token, type: secret, description: The token., required: true}
    - {name: tenant, type: string, description: The tenant header., default: shop}
    - {name: timeout, type: duration, description: The timeout., default: 10s}
  template:
    spec:
      clusterSelector: {matchLabels: {env: prod}}
      output:
        otlp:
          endpoint: \"%{endpoint}\"
          timeout: \"%{timeout}\"
          headers: [{name: X-Tenant, value: \"%{tenant}\"}]
          authentication: {bearerToken: {value: \"%{token}\"}}
";

    const INSTANCE: &str = "\
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: PipelineInstance
metadata: {name: traces}
spec:
  template: {name: tempo}
  bindings:
    endpoint: {value: \"https://tempo.shop.example:4317\"}
    token: {secretKeyRef: {name: tempo, namespace: kaas-observer, key: token}}
    tenant: {value: SECRET-tenant-header}
";

    /// Issue 18: templates and instances through `pipeline validate/apply/get/list/
    /// delete`, `render` with secrets masked, `apply --diff`, and `rollback`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn templates_and_instances_apply_render_diff_and_roll_back() {
        let (h, address) = setup().await;
        let as_shop = |args: &[&str]| {
            let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            all.extend(["--tenant".to_owned(), "shop".to_owned()]);
            async move {
                let args: Vec<&str> = all.iter().map(String::as_str).collect();
                observer(address, Some(ADMIN), &args).await
            }
        };
        let cluster = as_shop(&["cluster", "add", "prod-1", "--label", "env=prod"]).await;
        ok(&cluster);
        let template = h.dir.path().join("template.yaml");
        let instance = h.dir.path().join("instance.yaml");
        std::fs::write(&template, TEMPLATE).unwrap();
        std::fs::write(&instance, INSTANCE).unwrap();
        let (template, instance) = (template.to_str().unwrap(), instance.to_str().unwrap());

        let out = observer(
            address,
            None,
            &["pipeline", "validate", "-f", template, "-f", instance],
        )
        .await;
        ok(&out);
        assert!(
            out.stdout.ends_with("2 valid, 0 invalid\n"),
            "{}",
            out.stdout
        );
        let out = as_shop(&["pipeline", "apply", "-f", template, "-f", instance]).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "PipelineTemplate tempo created\nPipelineInstance traces created\n"
        );

        let out = as_shop(&["pipeline", "render", "traces", "--cluster", "prod-1"]).await;
        ok(&out);
        assert!(
            out.stdout.starts_with("# PipelineInstance traces for cluster prod-1, template generation 1; it runs there."),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("value: '***'"), "{}", out.stdout);
        assert!(!out.stdout.contains("SECRET"), "{}", out.stdout);

        std::fs::write(template, TEMPLATE.replace("default: 10s", "default: 20s")).unwrap();
        let out = as_shop(&["pipeline", "apply", "--diff", "-f", template]).await;
        ok(&out);
        assert!(
            out.stdout.contains("--- PipelineTemplate tempo (stored)"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("\n-   - default: 10s\n+   - default: 20s\n"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .ends_with("PipelineTemplate tempo configured, re-rendered: traces\n"),
            "{}",
            out.stdout
        );
        std::fs::write(
            instance,
            INSTANCE.replace("tempo.shop.example", "tempo.other.example"),
        )
        .unwrap();
        let out = as_shop(&["pipeline", "apply", "--diff", "--dry-run", "-f", instance]).await;
        ok(&out);
        assert!(
            out.stdout.contains("--- TracePipeline traces (running)"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("-       endpoint: https://tempo.shop.example:4317\n+       endpoint: https://tempo.other.example:4317\n"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("SECRET"), "{}", out.stdout);
        assert!(
            out.stdout
                .ends_with("PipelineInstance traces configured (dry run)\n"),
            "{}",
            out.stdout
        );

        let out = as_shop(&["pipeline", "rollback", "tempo", "--generation", "1"]).await;
        ok(&out);
        assert_eq!(
            out.stdout,
            "PipelineTemplate tempo rolled back to generation 1 as generation 3, re-rendered: traces\n"
        );
        let out = as_shop(&["pipeline", "list"]).await;
        ok(&out);
        assert!(out.stdout.contains("template tempo@3"), "{}", out.stdout);
        assert!(out.stdout.contains("PipelineTemplate"), "{}", out.stdout);
        let out = as_shop(&[
            "pipeline", "get", "traces", "--kind", "instance", "-o", "yaml",
        ])
        .await;
        ok(&out);
        assert!(
            out.stdout.contains("templateGeneration: 3"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("SECRET"), "{}", out.stdout);
        // What get printed applies back: `***` keeps the stored value.
        std::fs::write(instance, &out.stdout).unwrap();
        let out = as_shop(&["pipeline", "apply", "-f", instance]).await;
        ok(&out);
        assert_eq!(out.stdout, "PipelineInstance traces unchanged\n");

        let out = as_shop(&["pipeline", "delete", "tempo", "--kind", "template"]).await;
        assert_eq!(out.code(), 1, "bound by an instance: {}", out.stderr);
        ok(&as_shop(&["pipeline", "delete", "traces", "--kind", "instance"]).await);
        ok(&as_shop(&["pipeline", "delete", "tempo", "--kind", "template"]).await);
    }
}
