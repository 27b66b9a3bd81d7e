//! `godwit certs add|import|list|show|remove`: certificates for an app's custom hostnames,
//! over `/v1/apps/{app}/certificates`. Private keys go up once, in `import`, and are never
//! printed: the API answers without them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use godwit_types::api::{AcmeCertificateRequest, Certificate, CustomCertificateRequest};

use super::{Ctx, app_name};
use crate::cli::{AppArg, ReadArgs};
use crate::client::{ApiClient, CallError};
use crate::output;

/// How often `add --wait` asks for the order's status.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Subcommand, Debug)]
pub(crate) enum CertsCmd {
    /// Get a certificate for a hostname by ACME (the hostname must already point at the proxy)
    Add(CertsAddArgs),
    /// Upload a certificate you got elsewhere (PEM chain and key)
    Import(CertsImportArgs),
    /// List the app's certificates
    #[command(alias = "ls")]
    List(ReadArgs),
    /// Show one certificate, with the error of a failed ACME order
    Show(CertsShowArgs),
    /// Delete a certificate: the proxies stop serving it and stop routing the hostname
    #[command(alias = "rm")]
    Remove(CertsRemoveArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CertsAddArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// The hostname, e.g. www.example.com
    pub(crate) hostname: String,
    /// How the ACME server checks that the hostname is yours
    #[arg(long, default_value = "http-01", value_parser = ["http-01", "tls-alpn-01"])]
    pub(crate) challenge: String,
    /// Wait until the certificate is ready (exit 1 if issuance fails)
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits, e.g. `5m`
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub(crate) wait_timeout: Duration,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CertsImportArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// The hostname the certificate is for
    pub(crate) hostname: String,
    /// PEM file: the certificate first, then its intermediates
    #[arg(long, value_name = "FILE")]
    pub(crate) fullchain: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CertsShowArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// The hostname
    pub(crate) hostname: String,
    /// Print the API's JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CertsRemoveArgs {
    #[command(flatten)]
    pub(crate) app: AppArg,
    /// The hostname
    pub(crate) hostname: String,
}

pub(super) async fn run(ctx: &Ctx, cmd: CertsCmd) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        CertsCmd::Add(args) => add(&client, &args).await,
        CertsCmd::Import(args) => import(&client, &args).await,
        CertsCmd::List(args) => {
            let app = app_name(&args.app)?;
            let list = client.list_certs(&app).await?;
            if args.json {
                return output::json(&list);
            }
            if list.certificates.is_empty() {
                output::say(format!("app {app} has no certificates"));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list.certificates.iter().map(cert_row).collect();
            output::table(
                &["HOSTNAME", "SOURCE", "STATUS", "NOT AFTER", "ISSUER"],
                &rows,
            );
            Ok(())
        }
        CertsCmd::Show(args) => {
            let app = app_name(&args.app)?;
            let cert = client.get_cert(&app, &args.hostname).await?;
            if args.json {
                return output::json(&cert);
            }
            show(&cert);
            Ok(())
        }
        CertsCmd::Remove(args) => {
            let app = app_name(&args.app)?;
            let cert = client.delete_cert(&app, &args.hostname).await?;
            output::say(format!("removed the certificate for {}", cert.hostname));
            Ok(())
        }
    }
}

async fn add(client: &ApiClient, args: &CertsAddArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let req = AcmeCertificateRequest {
        hostname: args.hostname.clone(),
        challenge: Some(args.challenge.clone()),
    };
    let mut cert = match client.add_acme_cert(&app, &req).await {
        Err(e) if e.status() == Some(422) && e.to_string().contains("no acme directory") => {
            anyhow::bail!(
                "{e}\nfrom the CLI: godwit certs import {} --fullchain FILE --key FILE",
                args.hostname
            )
        }
        other => other?,
    };
    if !args.json {
        output::say(format!(
            "ordered a certificate for {} ({}): {}",
            cert.hostname, args.challenge, cert.status
        ));
    }
    if args.wait {
        cert = wait_issued(client, &app, &cert.hostname, args.wait_timeout).await?;
    }
    if args.json {
        return output::json(&cert);
    }
    if args.wait {
        output::say(format!(
            "certificate for {} is {}, valid until {}",
            cert.hostname,
            cert.status,
            not_after(&cert)
        ));
    } else {
        output::say(format!(
            "follow it with `godwit certs show {}`, or add --wait",
            cert.hostname
        ));
    }
    Ok(())
}

/// Polls the certificate until it is `ready`; a `failed` one, or a deadline passed, is an
/// error with the API's reason.
async fn wait_issued(
    client: &ApiClient,
    app: &str,
    hostname: &str,
    timeout: Duration,
) -> anyhow::Result<Certificate> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let cert = client.get_cert(app, hostname).await?;
        match cert.status.as_str() {
            "ready" => return Ok(cert),
            "failed" => anyhow::bail!(
                "issuing the certificate for {hostname} failed: {}",
                cert.error.as_deref().unwrap_or("the API gave no reason")
            ),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the certificate for {hostname} is still {} after {}: follow it with \
                 `godwit certs show {hostname}`",
                cert.status,
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn import(client: &ApiClient, args: &CertsImportArgs) -> anyhow::Result<()> {
    let app = app_name(&args.app)?;
    let fullchain = read_pem(&args.fullchain, "--fullchain")?;
    let private_key = read_pem(&args.key, "--key")?;
    check_not_swapped(&args.fullchain, &fullchain, &args.key, &private_key)?;
    let req = CustomCertificateRequest {
        hostname: args.hostname.clone(),
        fullchain,
        private_key,
    };
    let cert = client
        .import_cert(&app, &req)
        .await
        .map_err(|e| name_the_file(e, args))?;
    if args.json {
        return output::json(&cert);
    }
    output::say(format!(
        "imported the certificate for {} (issuer {}, valid until {})",
        cert.hostname,
        cert.issuer.as_deref().unwrap_or("-"),
        not_after(&cert)
    ));
    Ok(())
}

/// Reads a PEM file given with `flag`; the error names the file and the flag.
fn read_pem(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    anyhow::ensure!(
        text.contains("-----BEGIN "),
        "{flag} {} is not a PEM file (no -----BEGIN line)",
        path.display()
    );
    Ok(text)
}

/// Catches `--fullchain` and `--key` given the wrong way round before anything is sent.
fn check_not_swapped(
    chain_path: &Path,
    chain: &str,
    key_path: &Path,
    key: &str,
) -> anyhow::Result<()> {
    let holds_cert = |pem: &str| pem.contains("-----BEGIN CERTIFICATE-----");
    anyhow::ensure!(
        holds_cert(chain),
        "--fullchain {} holds no certificate{}",
        chain_path.display(),
        if holds_cert(key) {
            ": are --fullchain and --key the wrong way round?"
        } else {
            ""
        }
    );
    anyhow::ensure!(
        key.contains("PRIVATE KEY-----"),
        "--key {} holds no private key",
        key_path.display()
    );
    Ok(())
}

/// Prefixes the API's 422 about the chain or the key with the file it came from.
fn name_the_file(error: CallError, args: &CertsImportArgs) -> anyhow::Error {
    let file = match &error {
        CallError::Status {
            status: 422,
            message,
        } if message.starts_with("private_key") => Some(&args.key),
        CallError::Status {
            status: 422,
            message,
        } if message.starts_with("fullchain") || message.starts_with("the certificate") => {
            Some(&args.fullchain)
        }
        _ => None,
    };
    match file {
        Some(file) => anyhow::Error::new(error).context(format!("{} was refused", file.display())),
        None => error.into(),
    }
}

/// The table row of `certs list`.
fn cert_row(cert: &Certificate) -> Vec<String> {
    vec![
        cert.hostname.clone(),
        cert.source.clone(),
        cert.status.clone(),
        not_after(cert),
        cert.issuer.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// Every field of one certificate, for `certs show`.
fn show(cert: &Certificate) {
    output::say(format!("Certificate for {}", cert.hostname));
    output::say(format!("  app:        {}", cert.app));
    output::say(format!("  source:     {}", cert.source));
    output::say(format!("  status:     {}", cert.status));
    if let Some(error) = &cert.error {
        output::say(format!("  error:      {error}"));
    }
    output::say(format!(
        "  issuer:     {}",
        cert.issuer.as_deref().unwrap_or("-")
    ));
    output::say(format!("  not after:  {}", not_after(cert)));
    output::say(format!(
        "  created:    {}",
        output::timestamp(cert.created_at)
    ));
    output::say(format!(
        "  updated:    {}",
        output::timestamp(cert.updated_at)
    ));
}

/// `not_after` as RFC 3339, or "-" before there is a certificate.
fn not_after(cert: &Certificate) -> String {
    cert.not_after
        .map(output::timestamp)
        .unwrap_or_else(|| "-".into())
}
