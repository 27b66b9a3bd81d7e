//! The Godwit side: creating machines through the API and timing them to their first 200.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use godwit_types::api::CreateMachineRequest;
use godwit_types::machine::MachinePort;
use godwit_types::{MachineConfig, MachineService};
use tokio::time::Instant;

use crate::api::{Api, CallError};
use crate::probe::{ProbeError, wait_for_200};

/// Why a Godwit-side step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("failed to create a machine")]
    Create(#[source] CallError),
    #[error("machine {id} has no usable private ip ({ip:?})")]
    NoIp { id: String, ip: String },
    #[error("machine {id} did not answer")]
    Probe {
        id: String,
        #[source]
        source: ProbeError,
    },
    #[error("failed to list the machines of app {app}")]
    List {
        app: String,
        #[source]
        source: CallError,
    },
    #[error("failed to destroy machine {id}")]
    Destroy {
        id: String,
        #[source]
        source: CallError,
    },
}

/// One machine created and answering.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) id: String,
    /// Just before the POST → the POST's answer.
    pub(crate) create_call: Duration,
    /// Just before the POST → the first 200.
    pub(crate) to_200: Duration,
}

/// Creates machines of one app and waits for them.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) api: Api,
    pub(crate) app: String,
    pub(crate) image: String,
    pub(crate) port: u16,
    pub(crate) timeout: Duration,
}

// === impl Cluster ===

impl Cluster {
    /// Creates one machine and polls it until `GET /` answers 200.
    pub(crate) async fn create_and_wait(&self) -> Result<Created, ClusterError> {
        let req = self.request();
        let started = Instant::now();
        let machine = self
            .api
            .create_machine(&self.app, &req)
            .await
            .map_err(ClusterError::Create)?;
        let create_call = started.elapsed();
        let ip: IpAddr = machine.private_ip.parse().map_err(|_| ClusterError::NoIp {
            id: machine.id.clone(),
            ip: machine.private_ip.clone(),
        })?;
        wait_for_200(SocketAddr::new(ip, self.port), self.timeout)
            .await
            .map_err(|source| ClusterError::Probe {
                id: machine.id.clone(),
                source,
            })?;
        Ok(Created {
            id: machine.id,
            create_call,
            to_200: started.elapsed(),
        })
    }

    /// Force-destroys one machine.
    pub(crate) async fn destroy(&self, id: &str) -> Result<(), ClusterError> {
        self.api
            .destroy_machine(&self.app, id)
            .await
            .map_err(|source| ClusterError::Destroy {
                id: id.to_owned(),
                source,
            })
    }

    /// Force-destroys every machine of the app, `concurrency` at a time (twice, to catch one a
    /// cancelled create persisted late); returns how many.
    pub(crate) async fn destroy_all(&self, concurrency: usize) -> Result<usize, ClusterError> {
        let mut destroyed = 0;
        for _ in 0..2 {
            let ids =
                self.api
                    .machine_ids(&self.app)
                    .await
                    .map_err(|source| ClusterError::List {
                        app: self.app.clone(),
                        source,
                    })?;
            if ids.is_empty() {
                break;
            }
            destroyed += ids.len();
            let results: Vec<Result<(), ClusterError>> = futures::stream::iter(ids)
                .map(|id| async move {
                    self.api
                        .destroy_machine(&self.app, &id)
                        .await
                        .map_err(|source| ClusterError::Destroy { id, source })
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            results.into_iter().collect::<Result<(), _>>()?;
        }
        Ok(destroyed)
    }

    /// Creates `count` machines, `concurrency` at a time, in rounds of at most `batch` (what
    /// the cluster has room for), destroying each round's machines between rounds. Returns the
    /// summed wall time of the rounds, each from its first POST until all its machines
    /// answered 200; the destroys are not timed.
    pub(crate) async fn throughput(
        &self,
        count: usize,
        concurrency: usize,
        batch: usize,
    ) -> Result<Duration, ClusterError> {
        let mut timed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            let round = left.min(batch.max(1));
            left -= round;
            let started = Instant::now();
            let results: Vec<Result<Created, ClusterError>> = futures::stream::iter(0..round)
                .map(|_| self.create_and_wait())
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            timed += started.elapsed();
            for result in results {
                result?;
            }
            self.destroy_all(concurrency).await?;
        }
        Ok(timed)
    }

    /// The machine config: the image, 1 shared CPU, 256 MB, a service on `port`.
    fn request(&self) -> CreateMachineRequest {
        CreateMachineRequest {
            config: MachineConfig {
                image: self.image.clone(),
                services: vec![MachineService {
                    protocol: "tcp".to_owned(),
                    internal_port: self.port,
                    ports: vec![MachinePort {
                        port: Some(80),
                        handlers: vec!["http".to_owned()],
                        force_https: None,
                        proxy_proto_options: None,
                        http_options: None,
                    }],
                    concurrency: None,
                    autostop: None,
                    autostart: None,
                    min_machines_running: None,
                    checks: Vec::new(),
                }],
                ..MachineConfig::default()
            },
            name: None,
            region: None,
            lease_ttl: None,
            skip_launch: false,
        }
    }
}
