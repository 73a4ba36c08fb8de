//! `shop`: the whole shop, or any part of it, in one binary.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use app::{Application, Settings};
use clap::{Parser, Subcommand};

/// The shop: an e-commerce backend as a modular monolith.
#[derive(Debug, Parser)]
#[command(name = "shop", version, about)]
struct Cli {
    /// Directory holding default.toml and <APP_ENV>.toml (optional: defaults are built in).
    #[arg(long, env = "APP_CONFIG_DIR", default_value = "config", global = true)]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the enabled modules over HTTP (the default).
    Serve,
    /// Apply pending migrations of the local modules, then exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Exit 0 if the server on the configured port is live (for container health checks).
    Healthcheck,
    /// Administration tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the sandbox card payment provider: a stand-in for a card network
    /// with Stripe-like test cards. It moves no money.
    SandboxProvider {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on.
        #[arg(long, default_value_t = 9090)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write the two Ed25519 keys a deployment mounts, each only if it is
    /// missing: `jwt-signing-key.pem` (signs access tokens) and
    /// `service-key.pem` (signs the modules' calls to each other). For
    /// containers and clusters without a secret store of their own.
    Generate {
        /// Directory to write them to (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin account (the first admin of a new shop).
    Create {
        /// Email address of the account.
        #[arg(long)]
        email: String,
        /// Password; when absent it is asked for twice on the terminal,
        /// without echo, or read from the first line of standard input when
        /// that is not a terminal. Given here, it is visible to other users
        /// of the machine in the process list while the command runs.
        #[arg(long)]
        password: Option<String>,
        /// Name shown to people.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
}

fn main() -> ExitCode {
    app::memory::tune_allocator();
    // Before any HTTP client is built (the trace exporter builds one).
    remote::tls::install_crypto_provider();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        return print_openapi();
    }
    // These need no configuration: keys come before a deployment has any,
    // and the sandbox provider is not the shop.
    match &command {
        Command::Keys(KeysCommand::Generate { dir }) => return generate_keys(dir),
        Command::SandboxProvider { host, port } => {
            telemetry::init_logging(telemetry::LogFormat::Auto, "info");
            return run_blocking(sandbox_provider(host.clone(), *port));
        }
        _ => {}
    }
    let settings = match app::settings::load(&cli.config_dir) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(settings.log.format, &settings.log.filter);
    let code = run_blocking(async move {
        match command {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Healthcheck => healthcheck(settings).await,
            Command::Admin(AdminCommand::Create {
                email,
                password,
                display_name,
            }) => create_admin(settings, email, password, display_name).await,
            Command::SandboxProvider { .. } | Command::Openapi | Command::Keys(_) => Ok(()),
        }
    });
    // The spans still buffered go out before the process ends.
    telemetry::trace::shutdown();
    code
}

/// Runs `task` on a multi-threaded runtime; its error is logged and printed.
fn run_blocking(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "shop failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

#[cfg(not(feature = "sandbox"))]
async fn sandbox_provider(_host: String, _port: u16) -> anyhow::Result<()> {
    anyhow::bail!(
        "the sandbox provider is not compiled into this binary (cargo feature \"sandbox\")"
    )
}

#[cfg(feature = "sandbox")]
async fn sandbox_provider(host: String, port: u16) -> anyhow::Result<()> {
    let (server, port) = payment_sandbox::server(&host, port, 2)?;
    tracing::info!(%host, port, "sandbox payment provider listening; it moves no money");
    let handle = server.handle();
    let running = tokio::spawn(server);
    // SIGTERM (containers, Kubernetes) or SIGINT (a terminal) stop it gracefully.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    handle.stop(true).await;
    running.await??;
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let database = app::database::DatabaseServer::resolve(&settings).await?;
    let result = app::database::migrate_local_modules(&settings, &database.url).await;
    database.shutdown().await;
    result
}

async fn healthcheck(settings: Settings) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/health/live", settings.server.port);
    let response = app::startup::http_client(&settings)?
        .get(&url)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

#[cfg(feature = "user")]
async fn create_admin(
    settings: Settings,
    email: String,
    password: Option<String>,
    display_name: String,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let password = match password {
        Some(password) => password,
        None if std::io::stdin().is_terminal() => {
            // Not echoed: a password typed in clear stays in the terminal's
            // scrollback and in recordings of the session.
            let first = rpassword::prompt_password("Password of the new admin: ")?;
            let again = rpassword::prompt_password("The same password again: ")?;
            if first != again {
                anyhow::bail!("the two passwords differ; nothing was created");
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let user = app::admin::create_admin(&settings, email, password, display_name).await?;
    tracing::info!(user.id = %user.id, "admin account created");
    eprintln!("created admin {} ({})", user.email, user.id);
    Ok(())
}

fn generate_keys(dir: &std::path::Path) -> ExitCode {
    for name in app::compose::KEY_FILES {
        let path = dir.join(name);
        let existed = path.exists();
        match auth::SigningKey::load_or_generate(&path, true) {
            Ok(key) if existed => eprintln!("{} exists (kid {})", path.display(), key.kid()),
            Ok(key) => eprintln!("wrote {} (kid {})", path.display(), key.kid()),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn print_openapi() -> ExitCode {
    match app::openapi::api_doc_json() {
        Ok(json) if std::io::stdout().write_all(json.as_bytes()).is_ok() => ExitCode::SUCCESS,
        _ => {
            eprintln!("error: cannot write the OpenAPI document");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "user"))]
async fn create_admin(
    _settings: Settings,
    _email: String,
    _password: Option<String>,
    _display_name: String,
) -> anyhow::Result<()> {
    anyhow::bail!("the user module is not compiled into this binary (cargo feature \"user\")")
}
