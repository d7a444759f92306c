//! The node's Prometheus scrape endpoint: a registry of the official Rust client
//! (`prometheus-client`, which writes the text format) served over HTTP/1 from a thread of its
//! own, only when `[metrics]` is configured, and the copy of core's [`NodeMetrics`] into it. It
//! computes no figure itself: each one is read from the node machine as it is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use cohort_core::node::NodeMetrics;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type Seconds = Gauge<f64, AtomicU64>;

/// Every figure a scrape shows, registered once.
struct Figures {
    registry: Registry,
    active_version: Gauge,
    staged_version: Gauge,
    syncing: Gauge,
    in_roster: Gauge,
    heartbeats: Counter,
    dropped: Family<Labels, Counter>,
    runs: Gauge,
    sessions: Gauge,
    processes: Gauge,
    audit_queue: Gauge,
    alarm_kills: Counter,
    denials: Counter,
    host_channels: Family<Labels, Gauge>,
    silent_agents: Gauge,
    sync_lag: Family<Labels, Seconds>,
}

impl Figures {
    fn new() -> Figures {
        let mut registry = Registry::default();
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let active_version =
            gauge(&mut registry, "cohort_member_active_version", "The active configuration's version");
        let staged_version =
            gauge(&mut registry, "cohort_member_staged_version", "The staged version (0: none)");
        let syncing = gauge(&mut registry, "cohort_member_syncing", "1 while fetching a newer configuration");
        let in_roster =
            gauge(&mut registry, "cohort_member_in_roster", "1 while the active roster holds this node");
        let heartbeats =
            counter(&mut registry, "cohort_heartbeats_received", "Heartbeats accepted since start");
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "cohort_member_messages_dropped",
            "Member messages refused, by reason",
            dropped.clone(),
        );
        let runs = gauge(&mut registry, "cohort_exec_runs_running", "Client runs in progress at the gateway");
        let sessions = gauge(&mut registry, "cohort_exec_sessions_running", "Exec sessions running");
        let processes =
            gauge(&mut registry, "cohort_exec_processes_running", "Commands running on exec hosts");
        let audit_queue =
            gauge(&mut registry, "cohort_audit_queue_depth", "Audit records not yet acknowledged");
        let alarm_kills =
            counter(&mut registry, "cohort_exec_alarm_kills", "Sessions the alarm ended since start");
        let denials =
            counter(&mut registry, "cohort_exec_denials", "Requests the exec hosts refused since start");
        let host_channels = Family::<Labels, Gauge>::default();
        registry.register(
            "cohort_gateway_host_channels",
            "The gateway's channels to exec hosts, carrying a session (busy) or kept open (idle)",
            host_channels.clone(),
        );
        let silent_agents =
            gauge(&mut registry, "cohort_policy_silent_agents", "Agents not heard within a window");
        let sync_lag = Family::<Labels, Seconds>::default();
        registry.register(
            "cohort_policy_sync_lag_seconds",
            "Seconds since each child server's last sync (-1: none since start)",
            sync_lag.clone(),
        );
        Figures {
            registry,
            active_version,
            staged_version,
            syncing,
            in_roster,
            heartbeats,
            dropped,
            runs,
            sessions,
            processes,
            audit_queue,
            alarm_kills,
            denials,
            host_channels,
            silent_agents,
            sync_lag,
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be the encoder's own bug.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Set only once `serve` ran: without it, `publish` does nothing.
static FIGURES: OnceLock<Arc<Mutex<Figures>>> = OnceLock::new();

fn lock(figures: &Mutex<Figures>) -> std::sync::MutexGuard<'_, Figures> {
    figures.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves the text format on `listen` (any path) from a thread of its own.
pub fn serve(listen: SocketAddr) -> Result<(), String> {
    let figures = Arc::clone(FIGURES.get_or_init(|| Arc::new(Mutex::new(Figures::new()))));
    let failed = |e: std::io::Error| format!("could not serve metrics on {listen}: {e}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
    let listener = std::net::TcpListener::bind(listen).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let figures = Arc::clone(&figures);
                    tokio::spawn(async move {
                        let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                            let body = lock(&figures).text();
                            async move {
                                let response = Response::builder()
                                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
            })
        })
        .map_err(failed)?;
    Ok(())
}

fn set_counter(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn as_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Copies `m` into the registry; before `serve` it does nothing.
pub fn publish(m: &NodeMetrics) {
    let Some(figures) = FIGURES.get() else { return };
    let f = lock(figures);
    if let Some(member) = &m.member {
        f.active_version.set(as_i64(member.active_version));
        f.staged_version.set(as_i64(member.staged_version.unwrap_or(0)));
        f.syncing.set(i64::from(member.syncing));
        f.in_roster.set(i64::from(member.in_roster));
        set_counter(&f.heartbeats, member.heartbeats_heard);
        for (reason, n) in &member.dropped {
            set_counter(&f.dropped.get_or_create(&vec![("reason", (*reason).to_owned())]), *n);
        }
    }
    let exec = &m.exec;
    f.runs.set(as_i64(exec.work.runs));
    f.sessions.set(as_i64(exec.work.sessions));
    f.processes.set(as_i64(exec.work.processes));
    f.audit_queue.set(as_i64(exec.work.audit_in_flight + exec.audit_queued));
    set_counter(&f.alarm_kills, exec.alarm_kills);
    set_counter(&f.denials, exec.denials);
    f.host_channels.get_or_create(&vec![("state", "busy".to_owned())]).set(as_i64(exec.host_channels_busy));
    f.host_channels.get_or_create(&vec![("state", "idle".to_owned())]).set(as_i64(exec.host_channels_idle));
    if let Some(policy) = &m.policy {
        f.silent_agents.set(as_i64(policy.silent_agents));
        for (child, lag) in &policy.child_sync_lag_ms {
            // A child never heard since start shows as -1: unknown, not zero lag.
            let seconds = lag.map_or(-1.0, |ms| ms as f64 / 1000.0);
            f.sync_lag.get_or_create(&vec![("child", child.clone())]).set(seconds);
        }
    }
}
