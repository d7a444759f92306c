//! `cohort audit tail|verify`: read the collector's hash-chained audit trail from the gateway
//! node's database; verify checks every link, every host's signature and every checkpoint the
//! collector signed, and names the first failure.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::exec::audit::{AuditDecision, ChainEntry};
use cohort_core::exec::audit_view::{audit_signers, entry_json, utc_text, verify_stored};
use cohort_core::exec::directory::ExecDirectory;
use cohort_core::exec::task::DataKind;
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::store::{Store, StoredEntry};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Show the last records.
    Tail {
        #[command(flatten)]
        source: Source,
        #[arg(short = 'n', default_value_t = 20)]
        count: usize,
        /// Only records from this time on: an age (10m, 2h, 1d), a date or time in UTC
        /// (2026-11-24, 2026-11-24T08:00:00Z), or Unix ms.
        #[arg(long, value_name = "TIME", value_parser = crate::time_arg::time_arg)]
        since: Option<u64>,
    },
    /// Every entry as one JSON object per line, oldest first, for a log pipeline.
    Export {
        #[command(flatten)]
        source: Source,
        /// JSON lines (the only format; the flag says so in scripts).
        #[arg(long, required = true)]
        json: bool,
    },
    /// Check every link, host signature and checkpoint; report the first failure. Needs
    /// --config: the host keys and the collector's key come from the gateway's configuration.
    Verify {
        #[command(flatten)]
        source: Source,
    },
}

#[derive(Debug, clap::Args)]
pub struct Source {
    /// The gateway node's config (its database holds the chain).
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    config: Option<PathBuf>,
    /// The database itself.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

impl Source {
    fn open(&self) -> anyhow::Result<Store> {
        let path = match (&self.config, &self.db) {
            (Some(config), _) => NodeConfig::load(config)?.database(),
            (None, Some(db)) => db.clone(),
            (None, None) => bail!("say where the audit trail is: --config NODE.toml or --db node.db"),
        };
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        Store::open(&path).with_context(|| format!("could not open {}", path.display()))
    }

    /// Whose signatures the trail must carry: each managed host's key by name, the gateway's
    /// own for its refusals, and the collector's (the gateway's) for checkpoints.
    fn keys(
        &self,
    ) -> anyhow::Result<(
        std::collections::BTreeMap<String, cohort_core::PublicIdentity>,
        cohort_core::PublicIdentity,
    )> {
        let Some(path) = &self.config else {
            bail!(
                "verify needs --config GATEWAY/node.toml: the keys to check the trail against come from it"
            );
        };
        let config = NodeConfig::load(path)?;
        if config.gateway.is_none() {
            bail!("{} has no [gateway] section", path.display());
        }
        let collector = cohort_io_mio::keyfile::read_key_file(&config.key_file)
            .context("could not read the gateway's key")?
            .public();
        // The managed hosts' keys as the gateway's installed configuration lists them.
        let record = Store::open(&config.database())?
            .load_member()?
            .with_context(|| format!("{} holds no configuration", config.database().display()))?;
        let (directory, _) = ExecDirectory::from_settings(&record.active.config.settings);
        Ok((audit_signers(&directory, collector), collector))
    }
}

fn line(entry: &ChainEntry) -> String {
    let r = &entry.record;
    let decision = match &r.decision {
        AuditDecision::Run => "run".to_owned(),
        AuditDecision::Denied { reason } => format!("DENIED: {reason}"),
        AuditDecision::Ended { outcome } => format!("ended: {outcome}"),
        AuditDecision::Lowered { ceilings } => format!("lowered: {ceilings}"),
    };
    // The data by size and the first bytes of its digest (`audit export --json` has it whole).
    let data: String = r
        .data
        .iter()
        .map(|d| match &d.what {
            DataKind::Stdin => format!(" [stdin {} B {}]", d.size, hex::encode(&d.sha256[..6])),
            DataKind::File { path, mode } => {
                format!(" [{path} {mode:04o} {} B {}]", d.size, hex::encode(&d.sha256[..6]))
            }
            DataKind::Env { name } => format!(" [env {name} {} B {}]", d.size, hex::encode(&d.sha256[..6])),
        })
        .collect();
    // The command last and whole, quoted as a shell reads it: a newline or an escape in an
    // argument shows as `$'…\n…'`, so one record is always one line.
    format!(
        "#{:<6} {} {:<8} {:<10} as {:<8} {}{data}: {}",
        entry.index,
        utc_text(r.at.0),
        r.host,
        r.principal,
        if r.run_as.is_empty() { "-" } else { &r.run_as },
        decision,
        r.subject(),
    )
}

pub fn run(command: &AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail { source, count, since } => {
            let mut chain = source.open()?.load_chain()?;
            // A record that does not decode has no time: it stays, so damage is never hidden.
            if let Some(since) = since {
                chain.retain(|stored| match stored {
                    StoredEntry::Entry(entry) => entry.record.at.0 >= *since,
                    StoredEntry::Undecodable { .. } => true,
                });
            }
            for stored in chain.iter().skip(chain.len().saturating_sub(*count)) {
                match stored {
                    StoredEntry::Entry(entry) => println!("{}", line(entry)),
                    StoredEntry::Undecodable { index, reason } => {
                        println!("#{index:<6} UNDECODABLE: {reason}")
                    }
                }
            }
            Ok(())
        }
        AuditCommand::Export { source, json: _ } => {
            use std::io::Write;
            let chain = source.open()?.load_chain()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for stored in chain {
                match stored {
                    StoredEntry::Entry(entry) => writeln!(out, "{}", entry_json(&entry))?,
                    StoredEntry::Undecodable { index, reason } => {
                        let broken = serde_json::json!({ "index": index, "undecodable": reason });
                        writeln!(out, "{broken}")?
                    }
                }
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Verify { source } => {
            let (signers, collector) = source.keys()?;
            let store = source.open()?;
            let checkpoints = store.load_checkpoints()?;
            let chain = store.load_chain()?;
            match verify_stored(&chain, &signers, &collector, &checkpoints) {
                Ok(count) => {
                    println!(
                        "audit chain intact: {count} entries, every host signature and {} checkpoints verified",
                        checkpoints.len()
                    );
                    Ok(())
                }
                Err(e) => bail!("audit chain broken: {e}"),
            }
        }
    }
}
