//! Rotating the cluster CA without a re-join (`observer ca rotate`, `observer ca
//! retire`), on the files of the CA directory while no observer replica changes them.
//!
//! # Steps and files
//!
//! | state | `ca.crt`/`ca.key` | `ca-previous.crt`/`ca-previous.key` |
//! |---|---|---|
//! | normal | the CA | absent |
//! | rotating (after `rotate`) | the new CA: signs agent certificates | the old CA: still trusted, signs the server certificate |
//! | after `retire` | the new CA: signs everything | absent: its certificates are refused |
//!
//! Replicas read the files at start, so each step is followed by a rolling restart (with
//! a Secret-mounted CA: update the Secret, then restart). Between the two steps agents
//! learn the two-CA bundle over their stream and renew their certificate with the new
//! CA; retire once they all did (`kaas_observer_agent_streams_on_previous_ca` counts
//! the streams that still use a certificate of the old CA, on each replica).
//!
//! # Crash safety
//!
//! `rotate` writes the new CA as `ca-next.crt`/`ca-next.key` (synced), then renames the
//! current files to `ca-previous.*`, then `ca-next.*` to `ca.*`. A crash leaves one of
//! three states, each recognised: only `ca-next.*` beside the current CA (nothing
//! changed yet: the leftover is removed and the rotation starts over), `ca-previous.*`
//! and `ca-next.*` without `ca.*` (finished by the next `rotate`; `serve` refuses to
//! start and says so), or the rotated state. `retire` removes the key before the
//! certificate, so a crash leaves a certificate without a key, which `retire` removes
//! again and `serve` refuses loudly.

use std::path::Path;

use super::{
    CA_CERT_FILE, CA_COMMON_NAME, CA_KEY_FILE, IdentityError, PREVIOUS_CA_CERT_FILE,
    PREVIOUS_CA_KEY_FILE, create_authority,
};

/// Temporary name of the new CA's certificate during `rotate`.
const NEXT_CA_CERT_FILE: &str = "ca-next.crt";
/// Temporary name of the new CA's key during `rotate`.
const NEXT_CA_KEY_FILE: &str = "ca-next.key";

/// Refuses a CA directory a `rotate` left half done (no `ca.crt`, but the old and the
/// new CA beside it), instead of creating a third CA that no agent trusts.
pub(super) fn refuse_unfinished_rotation(dir: &Path) -> Result<(), IdentityError> {
    if !dir.join(CA_CERT_FILE).exists()
        && (dir.join(NEXT_CA_CERT_FILE).exists() || dir.join(PREVIOUS_CA_CERT_FILE).exists())
    {
        return Err(IdentityError::Rotation(format!(
            "{} holds a CA rotation that did not finish (no {CA_CERT_FILE}); run `observer ca rotate` again to finish it",
            dir.display()
        )));
    }
    Ok(())
}

/// Starts a rotation in `dir`: the current CA becomes the previous one and a new CA is
/// created. Refused while a previous CA exists (retire it first).
pub fn rotate(dir: &Path) -> Result<(), IdentityError> {
    let exists = |file: &str| dir.join(file).exists();
    let rename = |from: &str, to: &str| {
        std::fs::rename(dir.join(from), dir.join(to)).map_err(|source| IdentityError::Io {
            path: dir.join(from),
            source,
        })
    };
    if !exists(CA_CERT_FILE) && exists(PREVIOUS_CA_CERT_FILE) && exists(NEXT_CA_CERT_FILE) {
        // A crash after the current CA moved aside: finish.
        rename(NEXT_CA_KEY_FILE, CA_KEY_FILE)?;
        rename(NEXT_CA_CERT_FILE, CA_CERT_FILE)?;
        sync_dir(dir);
        return Ok(());
    }
    if !exists(CA_CERT_FILE) || !exists(CA_KEY_FILE) {
        return Err(IdentityError::Rotation(format!(
            "{} holds no complete CA ({CA_CERT_FILE} and {CA_KEY_FILE}) to rotate",
            dir.display()
        )));
    }
    if exists(PREVIOUS_CA_CERT_FILE) || exists(PREVIOUS_CA_KEY_FILE) {
        return Err(IdentityError::Rotation(format!(
            "a rotation is already under way in {} ({PREVIOUS_CA_CERT_FILE} exists); retire the previous CA with `observer ca retire` first",
            dir.display()
        )));
    }
    // A leftover of a crash before anything was renamed: start over.
    for leftover in [NEXT_CA_KEY_FILE, NEXT_CA_CERT_FILE] {
        remove_if_present(&dir.join(leftover))?;
    }
    let name = format!(
        "{CA_COMMON_NAME} {}",
        chrono_free_timestamp(std::time::SystemTime::now())
    );
    create_authority(dir, NEXT_CA_CERT_FILE, NEXT_CA_KEY_FILE, &name)?;
    rename(CA_KEY_FILE, PREVIOUS_CA_KEY_FILE)?;
    rename(CA_CERT_FILE, PREVIOUS_CA_CERT_FILE)?;
    rename(NEXT_CA_KEY_FILE, CA_KEY_FILE)?;
    rename(NEXT_CA_CERT_FILE, CA_CERT_FILE)?;
    sync_dir(dir);
    Ok(())
}

/// Ends a rotation in `dir`: the previous CA is removed, so its certificates are
/// refused after the next restart. Refused when there is none.
pub fn retire(dir: &Path) -> Result<(), IdentityError> {
    let cert = dir.join(PREVIOUS_CA_CERT_FILE);
    let key = dir.join(PREVIOUS_CA_KEY_FILE);
    if !cert.exists() && !key.exists() {
        return Err(IdentityError::Rotation(format!(
            "{} holds no previous CA ({PREVIOUS_CA_CERT_FILE}) to retire",
            dir.display()
        )));
    }
    remove_if_present(&key)?;
    remove_if_present(&cert)?;
    sync_dir(dir);
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` of `at`, for the new CA's name.
fn chrono_free_timestamp(at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn remove_if_present(path: &Path) -> Result<(), IdentityError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes the renames durable; best effort, as not every filesystem allows it.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::{ClusterCa, DEFAULT_INSTANCE};
    use super::*;

    fn csr() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        super::super::first_certificate(pem).unwrap()
    }

    fn pems(bundle: &str) -> usize {
        bundle.matches("-----BEGIN CERTIFICATE-----").count()
    }

    #[test]
    fn a_rotation_trusts_both_cas_signs_agents_with_the_new_one_and_retiring_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let old = ClusterCa::load_or_create(dir.path()).unwrap();
        let old_agent = old
            .sign_agent_csr("c1", DEFAULT_INSTANCE, &csr(), Duration::from_secs(60))
            .unwrap();
        assert!(old.signed_by_active(&der(&old_agent.pem)));
        assert!(!old.is_rotating());

        rotate(dir.path()).unwrap();
        let rotating = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(rotating.is_rotating());
        assert_eq!(pems(&rotating.bundle_pem()), 2);
        assert!(rotating.bundle_pem().contains(old.bundle_pem().as_str()));
        // The old CA's agents are told apart, the new ones are signed by the new CA.
        assert!(!rotating.signed_by_active(&der(&old_agent.pem)));
        let new_agent = rotating
            .sign_agent_csr("c1", DEFAULT_INSTANCE, &csr(), Duration::from_secs(60))
            .unwrap();
        assert!(rotating.signed_by_active(&der(&new_agent.pem)));
        // The server certificate still chains to the old CA, which every agent trusts.
        let (server, _) = rotating.server_certificate(&["localhost".into()]).unwrap();
        assert!(old.signed_by_active(&der(&server)));
        // A second rotation before retiring would leave agents without a trusted CA.
        let refused = rotate(dir.path()).unwrap_err();
        assert!(refused.to_string().contains("retire"), "{refused}");

        retire(dir.path()).unwrap();
        let retired = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(!retired.is_rotating());
        assert_eq!(pems(&retired.bundle_pem()), 1);
        assert!(!retired.bundle_pem().contains(old.bundle_pem().as_str()));
        let (server, _) = retired.server_certificate(&["localhost".into()]).unwrap();
        assert!(retired.signed_by_active(&der(&server)));
        assert!(retire(dir.path()).is_err(), "nothing left to retire");
    }

    #[test]
    fn a_rotation_interrupted_after_moving_the_old_ca_is_refused_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let old = ClusterCa::load_or_create(dir.path()).unwrap();
        // The state a crash between the renames leaves.
        create_authority(dir.path(), NEXT_CA_CERT_FILE, NEXT_CA_KEY_FILE, "next").unwrap();
        std::fs::rename(
            dir.path().join(CA_KEY_FILE),
            dir.path().join(PREVIOUS_CA_KEY_FILE),
        )
        .unwrap();
        std::fs::rename(
            dir.path().join(CA_CERT_FILE),
            dir.path().join(PREVIOUS_CA_CERT_FILE),
        )
        .unwrap();
        let error = ClusterCa::load_or_create(dir.path()).unwrap_err();
        assert!(error.to_string().contains("observer ca rotate"), "{error}");
        rotate(dir.path()).unwrap();
        let finished = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(finished.is_rotating());
        assert!(finished.bundle_pem().contains(old.bundle_pem().as_str()));
    }

    #[test]
    fn a_leftover_next_ca_is_replaced_by_a_fresh_rotation() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        create_authority(dir.path(), NEXT_CA_CERT_FILE, NEXT_CA_KEY_FILE, "stale").unwrap();
        let stale = std::fs::read_to_string(dir.path().join(NEXT_CA_CERT_FILE)).unwrap();
        rotate(dir.path()).unwrap();
        let rotated = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(!rotated.bundle_pem().contains(stale.as_str()));
        assert!(!dir.path().join(NEXT_CA_CERT_FILE).exists());
    }

    #[test]
    fn timestamps_are_civil_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_661);
        assert_eq!(chrono_free_timestamp(at), "20260101T010101Z");
        assert_eq!(chrono_free_timestamp(UNIX_EPOCH), "19700101T000000Z");
    }
}
