//! What `observer serve` keeps in its data directory and opens before anything runs:
//! the secrets key, the database with the bootstrap admin token, and the cluster CA.
//! Called only once every flag was checked ([`super::settings`]): a wrong flag leaves
//! a fresh data directory empty.

use std::path::Path;
use std::sync::Arc;

use super::args::ServeArgs;
use super::{ADMIN_TOKEN_FILE, ServeError, io_error};
use crate::identity::ClusterCa;
use crate::secrets::SecretBox;
use crate::store::Store;

/// Creates the data directory, opens (and migrates) the database, makes sure the
/// bootstrap admin token is accepted (refusing one that was revoked), and loads or
/// creates the cluster CA.
pub(super) async fn open_data(args: &ServeArgs) -> Result<(Store, Arc<ClusterCa>), ServeError> {
    std::fs::create_dir_all(&args.data_dir).map_err(io_error(&args.data_dir))?;
    let secrets = secret_box(args)?;
    let store = match &args.database_url {
        Some(url) => Store::connect(url, secrets).await?,
        None => Store::open_sqlite(&args.data_dir.join("observer.db"), secrets).await?,
    };
    store
        .ensure_admin_token(&admin_token(args)?)
        .await
        .map_err(|error| match error {
            crate::store::StoreError::BootstrapTokenRevoked { .. } => {
                ServeError::BootstrapTokenRevoked {
                    reason: error.to_string(),
                    hint: new_bootstrap_token_hint(args),
                }
            }
            other => other.into(),
        })?;
    let ca_dir = args.ca_dir.clone().unwrap_or_else(|| args.data_dir.clone());
    let ca = Arc::new(ClusterCa::load_or_create(&ca_dir)?);
    Ok((store, ca))
}

pub(super) fn secret_box(args: &ServeArgs) -> Result<SecretBox, ServeError> {
    let current = match (&args.secrets_key, &args.secrets_key_file) {
        (Some(key), _) => SecretBox::from_env_base64(key)?,
        (None, Some(file)) => SecretBox::from_key_file(file)?,
        (None, None) => SecretBox::load_or_create(&args.data_dir.join("secrets.key"))?,
    };
    let previous = args
        .previous_secrets_key_files
        .iter()
        .map(|file| SecretBox::from_key_file(file))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(current.with_previous_keys(previous))
}

/// What the operator does when the configured bootstrap admin token was revoked.
fn new_bootstrap_token_hint(args: &ServeArgs) -> String {
    if args.admin_token.is_some() {
        "Pass a new token with --admin-token or KAAS_ADMIN_TOKEN (e.g. from \
         `openssl rand -base64 32`), or use an admin token made with `observer token create`"
            .to_owned()
    } else if let Some(file) = &args.admin_token_file {
        format!(
            "Write a new token into {} (e.g. `openssl rand -base64 32`) and start again",
            file.display()
        )
    } else {
        format!(
            "Delete {} and start again: a new bootstrap token is created in its place",
            args.data_dir.join(ADMIN_TOKEN_FILE).display()
        )
    }
}

/// The bootstrap admin token: given, read from a file, or created in the data
/// directory (mode 0600) so a fresh install can be used at once. Never logged.
pub(super) fn admin_token(args: &ServeArgs) -> Result<String, ServeError> {
    if let Some(token) = &args.admin_token {
        return Ok(token.trim().to_owned());
    }
    let path = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(ADMIN_TOKEN_FILE));
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) | Err(_) if args.admin_token_file.is_some() => Err(ServeError::Flag {
            flag: "admin-token-file",
            reason: format!("{} is missing or empty", path.display()),
        }),
        _ => {
            let token = random_token()?;
            write_private(&path, &token)?;
            tracing::info!(file = %path.display(), "created the bootstrap admin token");
            Ok(token)
        }
    }
}

fn random_token() -> Result<String, ServeError> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServeError::Server("no random numbers from the system".into()))?;
    Ok(format!(
        "kot_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).map_err(io_error(path))
}
