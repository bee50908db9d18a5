//! The `heartgate` command.
//!
//! ```text
//! heartgate [--config FILE] [--data-dir DIR] [--listen ADDR]   start the server
//! heartgate check-config [--config FILE]                      validate, print the result
//! heartgate users add USERNAME [--name N] [--fhir-user R] [--patient ID[=LABEL]]...
//! heartgate keys rotate                                       new active signing key
//! heartgate keys generate-kek FILE                            key-encryption key for Redis
//! heartgate audit verify FILE                                 check the audit chain
//! ```

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use heartgate_server::config::{process_env, Config, Env, LogFormat};

/// Tokio worker threads per CPU core (see where the runtime is built).
const WORKERS_PER_CORE: usize = 4;

#[derive(Parser)]
#[command(
    name = "heartgate",
    version,
    about = "A zero-trust token service for health data"
)]
struct Cli {
    /// Configuration file (TOML). Every setting can also come from HEARTGATE_* variables.
    #[arg(long, global = true, env = "HEARTGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (keys, development PKI, embedded store, audit log).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit.
    CheckConfig,
    /// Manage local users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; the password is read from standard input (one line).
    Add {
        /// Login name.
        username: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// SMART fhirUser, e.g. Practitioner/7.
        #[arg(long)]
        fhir_user: Option<String>,
        /// A patient the user may select, `Patient/123` or `Patient/123=Label`.
        #[arg(long = "patient")]
        patients: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new active signing key; the previous one stays published. On a Redis
    /// store, the cluster's shared keys: running nodes take the new key at once.
    Rotate,
    /// Write a new key-encryption key (32 random bytes, base64url, mode 0600) to FILE,
    /// for `[redis] key_encryption_key_file`. Refuses to overwrite an existing file.
    GenerateKek {
        /// The file to create.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of an audit log file.
    Verify {
        /// The file.
        file: PathBuf,
    },
}

fn env_with_flags(cli: &Cli) -> Env {
    let mut env = process_env();
    if let Some(d) = &cli.data_dir {
        env.push((
            "HEARTGATE_DATA_DIR".into(),
            format!("{:?}", d.display().to_string()),
        ));
    }
    if let Some(l) = &cli.listen {
        env.push(("HEARTGATE_LISTEN".into(), format!("\"{l}\"")));
    }
    env
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

/// mimalloc: the allocator of the request path (the per-request JSON, form maps and audit
/// lines are many small short-lived allocations; see README "Load test, side by side").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = env_with_flags(&cli);
    let resolved = match Config::load(cli.config.as_deref(), &env) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("heartgate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            println!(
                "configuration ok: issuer {}, listen {}, store {}, {} static client(s)",
                resolved.issuer,
                resolved.config.listen,
                resolved.config.store,
                resolved.clients.len()
            );
            ExitCode::SUCCESS
        }
        Some(Command::Keys {
            command: KeysCommand::Rotate,
        }) => match heartgate_server::run::rotate_keys(&resolved) {
            Ok(heartgate_server::run::Rotated::Local(kid)) => {
                println!("new active signing key {kid}; restart the server to use it");
                ExitCode::SUCCESS
            }
            Ok(heartgate_server::run::Rotated::Shared { kid, listening }) => {
                match listening {
                    Some(n) => println!(
                        "new active signing key {kid} shared with the cluster; announced to {n} running node(s)"
                    ),
                    None => println!(
                        "new active signing key {kid} shared with the cluster; the announcement failed, nodes take it within key_refresh_secs"
                    ),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("heartgate: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Keys {
            command: KeysCommand::GenerateKek { file },
        }) => {
            let written = heartgate_server::keyshare::Kek::generate_text()
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    heartgate_server::setup::write_new_secret(&file, text.as_bytes())
                        .map_err(|e| e.to_string())
                });
            match written {
                Ok(()) => {
                    println!(
                        "key-encryption key written to {}; give every node the same file",
                        file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("heartgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Audit {
            command: AuditCommand::Verify { file },
        }) => match heartgate_server::audit_log::verify(&file) {
            Ok(report) => {
                println!("{}", heartgate_server::audit_log::summary(&Ok(report)));
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{}", heartgate_server::audit_log::summary(&Err(e)));
                ExitCode::FAILURE
            }
        },
        Some(Command::Users {
            command:
                UsersCommand::Add {
                    username,
                    name,
                    fhir_user,
                    patients,
                },
        }) => {
            let mut password = String::new();
            if std::io::stdin().lock().read_line(&mut password).is_err() {
                eprintln!("heartgate: cannot read the password from standard input");
                return ExitCode::FAILURE;
            }
            let password =
                zeroize::Zeroizing::new(password.trim_end_matches(['\r', '\n']).to_owned());
            let dir = heartgate_server::setup::DataDir::new(&resolved.config.data_dir);
            match heartgate_server::users::add_user(
                &dir.path("users.json"),
                &username,
                &password,
                name,
                fhir_user,
                patients,
                resolved.config.login.password_params(),
            ) {
                Ok(()) => {
                    println!("user {username} added; restart the server to load it");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("heartgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            init_logging(resolved.config.log.format, &resolved.config.log.level);
            let server = match heartgate_server::run::build(&resolved) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("heartgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Requests that change state wait, on their worker thread, for the store's
            // group commit and for their audit line (THREATS S8). Four workers per core
            // keep the other connections served meanwhile, and let more waiters share one
            // commit or one audit write; the work itself stays CPU-bound per core.
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS_PER_CORE * cores)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("heartgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(heartgate_server::run::run(server)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("heartgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
