//! Embedding the lubdub client in a program: connect, watch status changes,
//! send and receive messages, join a room and watch who is in it.
//!
//! Run a server first (`cargo run -- server`), then:
//! `cargo run --example embed -- 127.0.0.1:7070 thermostat`

use std::time::Duration;

use lubdub::client::{Client, ClientConfig, ClientEvent, Status};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let name = args.next().unwrap_or_else(|| "thermostat".into());

    let mut config = ClientConfig::new(server, name);
    config.interval = Some(Duration::from_secs(1));
    let mut client = Client::connect(config).await?;
    println!("connected: {:?}", client.welcome());

    client.join("#thermostats").await?;
    client.watch("#thermostats").await?;
    client.broadcast("21.5 °C").await?;
    let mut readings = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = readings.tick() => client.broadcast("21.5 °C").await?,
            event = client.next_event() => match event {
                Some(ClientEvent::Message(message)) => {
                    println!("[{}] {}", message.from, String::from_utf8_lossy(&message.body));
                }
                Some(ClientEvent::Notice(reason)) => println!("server notice: {}", reason.text),
                Some(ClientEvent::Status(Status::Stopped { reason, cause })) => {
                    println!("stopped ({cause:?}): {reason}");
                    return Ok(());
                }
                Some(ClientEvent::Status(status)) => println!("status: {status:?}"),
                Some(ClientEvent::Presence(update)) => {
                    println!("{}", lubdub::client::presence::describe(&update));
                }
                // Kinds of event a later version may add.
                Some(_) => {}
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        }
    }
}
