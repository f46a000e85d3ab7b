//! Shared by the tests that run several observer replicas on one PostgreSQL: a fresh
//! database on the test server (127.0.0.1:5432, `KAAS_TEST_POSTGRES_URL`), a store on
//! it per replica, and its removal. `KAAS_SKIP_POSTGRES=1` skips these tests.

#![allow(dead_code)]

use kaas_observer::secrets::SecretBox;
use kaas_observer::store::Store;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database on the test PostgreSQL server, dropped by [`TestDatabase::drop_now`].
pub struct TestDatabase {
    admin: sea_orm::DatabaseConnection,
    name: String,
    url: String,
    secrets: SecretBox,
}

impl TestDatabase {
    /// `None` when `KAAS_SKIP_POSTGRES=1`.
    pub async fn create(tag: &str) -> Option<Self> {
        use sea_orm::{ConnectionTrait, Database};
        if std::env::var("KAAS_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("KAAS_SKIP_POSTGRES=1: skipping a PostgreSQL test");
            return None;
        }
        let admin_url =
            std::env::var("KAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let name = format!("kaas_{tag}_{}", std::process::id());
        let admin = Database::connect(&admin_url)
            .await
            .expect("the test PostgreSQL answers");
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("a test database");
        let (base, _) = admin_url.rsplit_once('/').expect("a database URL");
        Some(Self {
            admin,
            url: format!("{base}/{name}"),
            name,
            secrets: SecretBox::generate().expect("a secrets key"),
        })
    }

    /// A store on the database: another replica each time.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, self.secrets.clone())
            .await
            .expect("a PostgreSQL store")
    }

    pub async fn drop_now(self) {
        use sea_orm::ConnectionTrait;
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}
