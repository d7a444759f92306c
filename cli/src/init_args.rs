//! What `cohort init` is asked to create: the cluster, its members, and the exec and policy
//! sites beside them. Owns the flags only; `init`, `exec_setup` and `policy_setup` read them.

use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to create the cluster in (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The cluster's id.
    #[arg(long, default_value = "cohort")]
    pub cluster: String,
    /// Number of founding members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub members: u16,
    /// Address members listen on. Use distinct loopback addresses or real host addresses.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// First port; member i listens for other members on base + i and for operators on
    /// base + 100 + i (both TCP).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Also create a gateway on m0 (with the KDC and audit collector) and an `exec` node hosting
    /// this many managed hosts, each on its own loopback address (127.0.x.y).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=5000))]
    pub exec_hosts: u16,
    /// The principal created for logging in.
    #[arg(long, default_value = "alice")]
    pub exec_user: String,
    /// A file holding the principal's password; without it one is generated into DIR.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The local user commands run as on the managed hosts (default: the user running init).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Port for the gateway (on --host) and for every managed host (on its own address).
    #[arg(long, default_value_t = 7300)]
    pub exec_port: u16,
    /// Also serve the web console on this port (HTTPS on --host, from the gateway, with a
    /// self-signed certificate made here; replace web.crt and web.key in m0/ with your own).
    #[arg(long, value_name = "PORT")]
    pub web_port: Option<u16>,
    /// Port for the KDC (on --host, a role of m0 with its own key); default: --exec-port + 1.
    #[arg(long, value_name = "PORT")]
    pub kdc_port: Option<u16>,
    /// Also create a security-policy tier: a master and this many local servers (the last behind
    /// the first when there are two or more).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub policy_locals: u16,
    /// Policy agents, spread over the locals, hosted by one `policy/agents` node.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=5000))]
    pub policy_agents: u16,
    /// First port of the policy servers (master, then each local).
    #[arg(long, default_value_t = 7500)]
    pub policy_port: u16,
    /// Sync window of the locals, in seconds.
    #[arg(long, default_value_t = 60)]
    pub policy_sync_s: u64,
    /// Poll interval of the agents, in seconds (default: the sync window).
    #[arg(long, value_name = "S")]
    pub policy_poll_s: Option<u64>,
}
