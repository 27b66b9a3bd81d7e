//! The test nats-server helper itself.

use std::net::TcpStream;

use godwit_state::testing::NatsServer;

#[test]
fn server_is_gone_after_drop() {
    let nats = NatsServer::start().expect("start nats-server");
    let port = nats.port;
    assert!(nats.url.ends_with(&format!(":{port}")));
    assert!(nats.store_dir().is_dir(), "jetstream store created");
    TcpStream::connect(("127.0.0.1", port)).expect("server listening");
    drop(nats);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after drop"
    );
}
