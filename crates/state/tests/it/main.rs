//! Integration tests for godwit-state against a real nats-server (one per test).

mod bucket;
mod regional;
mod replica;
mod restart;
mod testing;

use std::time::Duration;

use anyhow::Context as _;
use godwit_state::testing::NatsServer;
use godwit_state::{Bucket, Change, StateClient};
use tokio::sync::broadcast;

/// Generous: CI machines are slow, and nothing here waits for the deadline on success.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Machine {
    id: String,
    state: String,
    cpus: u32,
}

fn machine(id: &str, state: &str) -> Machine {
    Machine {
        id: id.to_owned(),
        state: state.to_owned(),
        cpus: 1,
    }
}

struct World {
    // Dropped last: the client goes first.
    client: StateClient,
    nats: NatsServer,
}

async fn must_world() -> World {
    let nats = NatsServer::start().expect("start nats-server");
    let client = StateClient::connect(&nats.url)
        .await
        .expect("connect to nats-server");
    World { client, nats }
}

impl World {
    async fn must_bucket(&self, name: &str) -> Bucket<Machine> {
        self.client.bucket(name).await.expect("open bucket")
    }
}

/// The next change, failing the test if none comes within the deadline.
async fn must_next(changes: &mut broadcast::Receiver<Change<Machine>>) -> Change<Machine> {
    tokio::time::timeout(DEADLINE, changes.recv())
        .await
        .context("no change within the deadline")
        .and_then(|change| change.context("change channel"))
        .expect("next change")
}
