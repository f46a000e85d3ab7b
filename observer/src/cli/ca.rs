//! `observer ca rotate|retire|status`: the cluster CA's rotation, offline on the CA
//! directory (see [`crate::identity::rotation`] for the steps and what each changes).
//! After each step, restart the observer replicas (with a Secret-mounted CA, update the
//! Secret from the directory first).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_OK};
use crate::identity::{CA_CERT_FILE, ClusterCa, PREVIOUS_CA_CERT_FILE, rotation};

/// `observer ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Start a rotation: the current CA becomes the previous one (still trusted, it
    /// signs the server certificate), a new CA signs agent certificates from now on.
    /// Agents learn the new bundle over their stream and renew.
    Rotate(CaDirArgs),
    /// End a rotation: remove the previous CA; its certificates are refused after the
    /// restart. Wait until kaas_observer_agent_streams_on_previous_ca is 0.
    Retire(CaDirArgs),
    /// Show the CA directory's state: the active CA and, during a rotation, the
    /// previous one.
    Status(CaDirArgs),
}

/// Where the CA files are.
#[derive(Debug, Args)]
pub struct CaDirArgs {
    /// The CA directory (`observer serve --ca-dir`); default: the data directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The observer's data directory (`observer serve --data-dir`).
    #[arg(long, value_name = "DIR", default_value = "observer-data")]
    pub data_dir: PathBuf,
}

impl CaDirArgs {
    fn dir(&self) -> PathBuf {
        self.ca_dir.clone().unwrap_or_else(|| self.data_dir.clone())
    }
}

/// Runs a CA command; failures are explained on `err`.
pub fn run(command: &CaCommand, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<u8> {
    let outcome = match command {
        CaCommand::Rotate(args) => rotation::rotate(&args.dir()).map(|()| {
            format!(
                "rotation started in {}: {PREVIOUS_CA_CERT_FILE} is the previous CA, {CA_CERT_FILE} the new one; restart the observer replicas, let the agents renew, then run `observer ca retire`",
                args.dir().display()
            )
        }),
        CaCommand::Retire(args) => rotation::retire(&args.dir()).map(|()| {
            format!(
                "the previous CA is retired in {}; restart the observer replicas: certificates it signed are refused from then on",
                args.dir().display()
            )
        }),
        CaCommand::Status(args) => status(&args.dir()),
    };
    match outcome {
        Ok(message) => {
            writeln!(out, "{message}")?;
            Ok(EXIT_OK)
        }
        Err(error) => {
            writeln!(err, "error: {error}")?;
            Ok(EXIT_FAILED)
        }
    }
}

/// One line per CA in the directory.
fn status(dir: &std::path::Path) -> Result<String, crate::identity::IdentityError> {
    if !dir.join(CA_CERT_FILE).exists() {
        return Ok(format!("no CA in {} yet", dir.display()));
    }
    let ca = ClusterCa::load_or_create(dir)?;
    let mut lines = vec![format!(
        "{}: {}",
        dir.join(CA_CERT_FILE).display(),
        if ca.is_rotating() {
            "active (signs agent certificates)"
        } else {
            "active (signs every certificate)"
        }
    )];
    if ca.is_rotating() {
        lines.push(format!(
            "{}: previous (trusted, signs the server certificate); retire it once every agent renewed",
            dir.join(PREVIOUS_CA_CERT_FILE).display()
        ));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_text(command: CaCommand) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&command, &mut out, &mut err).unwrap();
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn args(dir: &std::path::Path) -> CaDirArgs {
        CaDirArgs {
            ca_dir: Some(dir.to_owned()),
            data_dir: PathBuf::from("unused"),
        }
    }

    #[test]
    fn rotate_status_and_retire_walk_through_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = run_text(CaCommand::Rotate(args(dir.path())));
        assert_eq!(code, EXIT_FAILED, "no CA to rotate yet");
        assert!(err.contains("no complete CA"), "{err}");
        ClusterCa::load_or_create(dir.path()).unwrap();
        let (code, out, _) = run_text(CaCommand::Status(args(dir.path())));
        assert_eq!(code, EXIT_OK);
        assert!(out.contains("signs every certificate"), "{out}");
        let (code, out, _) = run_text(CaCommand::Rotate(args(dir.path())));
        assert_eq!(code, EXIT_OK);
        assert!(out.contains("observer ca retire"), "{out}");
        let (_, out, _) = run_text(CaCommand::Status(args(dir.path())));
        assert!(out.contains("previous"), "{out}");
        let (code, _, err) = run_text(CaCommand::Rotate(args(dir.path())));
        assert_eq!(code, EXIT_FAILED);
        assert!(err.contains("retire"), "{err}");
        let (code, _, _) = run_text(CaCommand::Retire(args(dir.path())));
        assert_eq!(code, EXIT_OK);
        let (_, out, _) = run_text(CaCommand::Status(args(dir.path())));
        assert!(!out.contains("previous"), "{out}");
    }
}
