//! A throwaway PostgreSQL server for tests: Debian's binaries
//! (`/usr/lib/postgresql/*/bin`), a cluster in a temporary directory, on
//! 127.0.0.1 only (no Unix socket), trusted local connections, stopped and
//! deleted when dropped.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (as CI
//! does) the cluster belongs to `nobody` and its commands run through
//! `runuser`. `scripts/ensure-postgres.sh` installs the binaries. Without
//! them, [`TestPostgres::start_or_skip`] prints a loud note and returns
//! `None`, unless `BEELINE_REQUIRE_POSTGRES` is set (the `just` recipes set
//! it), in which case it panics.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

/// The unprivileged user the cluster runs as when the tests run as root.
const RUN_AS: &str = "nobody";

/// Database user (a superuser of the test cluster, no password).
pub const USER: &str = "beeline";

/// Whether a missing PostgreSQL is a failure (`BEELINE_REQUIRE_POSTGRES`).
pub fn postgres_required() -> bool {
    std::env::var("BEELINE_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A running test cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
}

impl TestPostgres {
    /// Starts a cluster, or explains why not: `None` (after a loud note on
    /// stderr) when PostgreSQL is not installed and not required; a panic
    /// when it is required, or installed but failing to start.
    pub fn start_or_skip(what: &str) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            if postgres_required() {
                panic!(
                    "BEELINE_REQUIRE_POSTGRES is set but PostgreSQL is not installed \
                     (no /usr/lib/postgresql/*/bin/initdb); run scripts/ensure-postgres.sh"
                );
            }
            eprintln!(
                "\n\n!!!!!!!! SKIPPED: {what}: PostgreSQL is not installed, so this was NOT \
                 tested against PostgreSQL. Run scripts/ensure-postgres.sh, or set \
                 BEELINE_REQUIRE_POSTGRES=1 to make this a failure. !!!!!!!!\n\n"
            );
            return None;
        };
        Some(Self::start(bin))
    }

    fn start(bin: PathBuf) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "beeline-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the cluster's temporary directory");
        let run_as = is_root().then_some(RUN_AS);
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .expect("hand the cluster's directory to the unprivileged user");
        }
        let port = free_port();
        let pg = Self {
            data: root.join("data"),
            bin,
            root,
            port,
            run_as,
        };
        pg.run_ok(
            "initdb",
            &[
                "-D",
                path_str(&pg.data),
                "-U",
                USER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let settings = format!(
            "\n# beeline test cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = ''\nmax_connections = 300\n"
        );
        let conf = pg.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        fs::write(&conf, text).expect("write postgresql.conf");
        pg.start_server();
        pg
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (see [`create_database`](Self::create_database)).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs one SQL command with `psql` in database `name`, and returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run_ok(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                USER,
                "-d",
                name,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: sessions are ended, committed data
    /// stays).
    pub fn stop_server(&self) {
        self.run_ok(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server again (after [`stop_server`](Self::stop_server)),
    /// on the same port.
    pub fn start_server(&self) {
        let log = self.root.join("server.log");
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        };
        command.current_dir(&self.root);
        command
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
        if !out.status.success() {
            let log = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed ({}):\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        out
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", path_str(&self.data), "-m", "immediate", "stop"])
            .output();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|e| panic!("could not run id: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {user:?} to run PostgreSQL as"))
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}
