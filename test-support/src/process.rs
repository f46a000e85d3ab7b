//! Running the project's binaries and real peer servers from tests.
//!
//! Every wait has a deadline and ends in a panic naming what was awaited, so a hung
//! process fails its test instead of stalling the suite.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a one-shot command may run before the test fails. Generous for a loaded
/// 2-core CI machine; the commands it guards finish in milliseconds.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A size field of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`) in bytes; `pid` is
/// a process id, or `"self"` for the test's own process. Panics when it cannot be read.
pub fn proc_status_bytes(pid: &str, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"));
    kib * 1024
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CommandOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// The exit code; panics if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs `program args…`, feeding `stdin`, and waits at most [`COMMAND_DEADLINE`].
pub fn run(program: impl AsRef<Path>, args: &[&str], stdin: &str) -> CommandOutput {
    let program = program.as_ref();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        // A command that does not read stdin closes the pipe; that is fine.
        let _ = input.write_all(stdin.as_bytes());
    });
    let deadline = Instant::now() + COMMAND_DEADLINE;
    loop {
        if child.try_wait().expect("wait on child").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} {args:?} ran longer than {COMMAND_DEADLINE:?}",
                program.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    let output = child.wait_with_output().expect("collect output");
    CommandOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A long-running process (a server under test, or a real peer such as Prometheus) that
/// is killed when the guard is dropped, even if the test panics.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Starts `command`, naming it `name` in failure messages.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM) and waits up to `deadline` for it to exit;
    /// kills it after that.
    pub fn terminate(&mut self, deadline: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How the process exited, if it has.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait on child") {
            panic!("{} exited early with {status}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of the workspace built beside the running test's binary
/// (`target/<profile>/<name>`, e.g. `cluster-agent` for an observer test); panics with
/// the command that builds it when it is missing.
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p {package}` (scripts/test.sh builds the workspace)",
        binary.display()
    );
    binary
}

/// A loopback port that was free a moment ago. Prefer binding port 0 directly where
/// the code under test allows it; this is for processes that must be told a port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// Waits until something accepts TCP connections on `addr`, or panics after `deadline`.
pub fn wait_for_tcp(addr: SocketAddr, deadline: Duration) {
    let until = Instant::now() + deadline;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < until,
            "nothing listened on {addr} within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_exit_code() {
        let out = run("sh", &["-c", "cat; echo err >&2; exit 3"], "hello");
        assert_eq!(out.code(), 3);
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn child_guard_kills_on_drop() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600"));
        let pid = guard.id();
        drop(guard);
        // After the kill and wait, the pid no longer names a live process of ours.
        let alive = Path::new(&format!("/proc/{pid}/status")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| !s.contains("State:\tZ"))
                .unwrap_or(false);
        assert!(!alive, "sleep {pid} survived its guard");
    }

    #[test]
    fn waits_for_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        wait_for_tcp(listener.local_addr().unwrap(), Duration::from_secs(5));
    }
}
